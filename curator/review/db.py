"""FiftyOne, its database, and which dataset there is the workspace's review dataset.

`connect` imports FiftyOne and makes sure its MongoDB answers within seconds;
`dataset_name`, `load_dataset`, `dataset_version` and `stamp` find the
workspace's dataset and refuse one this curator must not touch (not ours,
another workspace's, a newer review schema). `ReviewError` is raised here and
by every review module above.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
from typing import Iterator

from .. import __version__
from ..fs.atomic import safe_name
from ..errors import CuratorError
from ..workspace import FORMAT_VERSION, Workspace, now

MONGO_TIMEOUT_MS = 3000
# Bump when the dataset's layout changes meaning; sync_dataset upgrades older datasets in place.
REVIEW_SCHEMA = 1
INFO_KEY = "curator"


class ReviewError(CuratorError):
    """A review problem the user can act on; the message is one line saying what and how."""


# --- FiftyOne and its database ---------------------------------------------------------

@contextlib.contextmanager
def _log_level(level: int) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("fiftyone", "eta")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels):
            lg.setLevel(old)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """FiftyOne logs banners and progress on stdout; keep --json output clean and stderr short."""
    with _log_level(logging.WARNING), contextlib.redirect_stdout(sys.stderr):
        yield


def _redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)


def connect():
    """Import FiftyOne and make sure its database answers, within seconds; returns the `fiftyone` module.

    FiftyOne itself waits 30 s for an unreachable server and then raises a
    generic error, so a configured URI is pinged first with a short timeout.
    """
    with quiet():
        import fiftyone as fo

        fo.config.show_progress_bars = False
    uri = fo.config.database_uri  # FIFTYONE_DATABASE_URI or ~/.fiftyone/config.json
    how = ("start it, or set FIFTYONE_DATABASE_URI=mongodb://HOST:PORT to a running MongoDB (docs/review.md); "
           "the workspace was not changed")
    if uri:
        import pymongo
        import pymongo.errors

        client = None
        try:
            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS,
                                         connectTimeoutMS=MONGO_TIMEOUT_MS)
            client.admin.command("ping")
        except pymongo.errors.ServerSelectionTimeoutError:
            raise ReviewError(f"no MongoDB answers at {_redact(uri)} (FIFTYONE_DATABASE_URI) within "
                              f"{MONGO_TIMEOUT_MS // 1000} s: {how}") from None
        except (pymongo.errors.PyMongoError, ValueError) as e:
            raise ReviewError(f"MongoDB at {_redact(uri)} refused us ({type(e).__name__}: {one_line(e)}): {how}") from None
        finally:
            if client is not None:
                client.close()
    else:
        from fiftyone.core.service import DatabaseService

        try:
            DatabaseService.find_mongod()
        except Exception:  # noqa: BLE001 - ServiceExecutableNotFound, PermissionError, ...
            raise ReviewError("no MongoDB for FiftyOne: FIFTYONE_DATABASE_URI is not set and this FiftyOne install "
                              "has no bundled database; start a MongoDB and set FIFTYONE_DATABASE_URI=mongodb://HOST:PORT "
                              "(docs/review.md); the workspace was not changed") from None
    try:
        with quiet():
            fo.list_datasets()  # FiftyOne's own connection (and, without a URI, its bundled mongod)
    except Exception as e:  # noqa: BLE001 - FiftyOne raises many kinds when its database is unusable
        raise ReviewError(f"FiftyOne cannot use its database ({type(e).__name__}: {one_line(e)}): {how}") from None
    return fo


def one_line(e: BaseException, limit: int = 200) -> str:
    """An error's message on one line, shortened: every review error is one line."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the workspace's dataset ------------------------------------------------------------

def dataset_name(ws: Workspace) -> str:
    """`curator-<folder>-<8 hex of the absolute path>`: stable for a workspace, distinct across workspaces."""
    digest = hashlib.sha256(str(ws.root).encode()).hexdigest()[:8]
    return f"curator-{safe_name(ws.root.name, 40)}-{digest}"


def dataset_version(ws: Workspace, dataset) -> int:
    """The review schema a dataset was written with; refuses datasets this curator must not touch."""
    info = (dataset.info or {}).get(INFO_KEY)
    has_face_id = "face_id" in dataset.get_field_schema()
    if not isinstance(info, dict) or not isinstance(info.get("review_schema"), int):
        if has_face_id:
            return 0  # made before versioning (or interrupted before it was stamped)
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} was not made by curator review (no face_id field); "
                          "leave it alone with --dataset OTHER_NAME, or delete it (`fiftyone datasets delete NAME`)")
    version = info["review_schema"]
    if version > REVIEW_SCHEMA:
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} was written by a newer curator (review schema {version}, "
                          f"this curator {__version__} knows up to {REVIEW_SCHEMA}); upgrade curator. "
                          "Nothing was changed: the tags are still in the dataset")
    owner = info.get("workspace")
    if owner and owner != str(ws.root):
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} belongs to workspace {owner}, not {ws.root}; "
                          "choose another --dataset")
    if not has_face_id:
        raise ReviewError(f"FiftyOne dataset {dataset.name!r} has lost its face_id field, so its samples cannot be "
                          "matched to faces; delete it (`fiftyone datasets delete NAME`; pull its tags first if you can "
                          "re-add face_id) and run curator review again")
    return version


def load_dataset(ws: Workspace, name: str | None = None):
    """The workspace's review dataset, or None if there is none yet (call `connect()` first)."""
    import fiftyone as fo

    name = name or dataset_name(ws)
    with quiet():
        if not fo.dataset_exists(name):
            return None
        dataset = fo.load_dataset(name)
    dataset_version(ws, dataset)
    return dataset


def stamp(ws: Workspace, dataset) -> None:
    """Record in `dataset.info` the review schema and the workspace it belongs to: what `dataset_version` reads."""
    info = dict(dataset.info or {})
    info[INFO_KEY] = {"review_schema": REVIEW_SCHEMA, "workspace_format": FORMAT_VERSION, "workspace": str(ws.root),
                      "tool_version": __version__, "synced": now()}
    dataset.info = info
    dataset.save()

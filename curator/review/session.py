"""`curator review`: the workspace's faces in the FiftyOne App, and the App's tags back into the table.

One persistent FiftyOne dataset per workspace (docs/review.md):

- one sample per face crop of the `--faces` scope (review.scope: at 10
  million faces, the selection and what a reviewer judges it against),
  keyed by the `face_id` field; every table column
  is a field except the three long vectors (`appearance`, `lmk68`,
  `align_matrix`), plus `landmarks` (Keypoints on the crop), `dup_group_size`
  and `pose_bin_faces`;
- two embeddings-panel maps computed from our own numbers: `identity_pca`
  (PCA of the workspace's identity embeddings) and `pose` (yaw, pitch);
- saved views: selected, rejected, kept, near-duplicate groups, rare poses,
  low quality, other identities;
- `dataset.info["curator"]` records the review schema and workspace format.

Tags are the review's result. `pull_tags` copies them into the table's
`rejected` (tag `reject`), `kept` (tag `keep`) and `review_tags` (every other
tag, sorted, comma-joined) columns; for faces in the dataset the dataset is
the truth, so untagging `reject` un-rejects. `sync_dataset` adds only faces
that are not in the dataset yet (seeding their tags from those columns, so a
deleted dataset is rebuilt with its tags) and never touches an existing
sample's tags.

The workspace lock is held only while the table is written (`pull_tags`), not
while a person looks at the App. FiftyOne is imported inside the functions,
so `import curator` stays cheap.

The parts, each importing only those below it:

- `review_app`: the App's server, watched while a person tags, tags pulled
  every few seconds and at its end;
- `review_dataset`: the dataset's contents (`sync_dataset`: samples, fields,
  maps, saved views);
- `review_scope`: which faces are in it (`--faces`), `review_samples`: the
  samples as documents written, removed and given landmarks in bulk;
- `review_tags`: tags back into the table (`pull_tags`);
- `review_db`: FiftyOne and its database (`connect`), which dataset is the
  workspace's and whether this curator may touch it (`load_dataset`,
  `dataset_version`), and `ReviewError`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable

from ..workspace import open_workspace
from .app import check_port, is_loopback, serve
from .dataset import fill_pending_landmarks, sync_dataset
from .db import REVIEW_SCHEMA, ReviewError, connect, dataset_name, dataset_version, load_dataset
from .samples import nice_this_thread
from .scope import DEFAULT_SCOPE, check_scope
from .tags import pull_tags


def review(workspace: str | os.PathLike, *, port: int = 5151, address: str = "127.0.0.1", pull_only: bool = False,
           app: bool = True, timeout: float | None = None, name: str | None = None, faces: str = DEFAULT_SCOPE,
           on_ready: Callable[[str], None] = lambda url: None,
           on_note: Callable[[str], None] = lambda note: None) -> dict:
    """`curator review`: pull, sync, run the App, pull again. The CLI prints what this returns."""
    ws = open_workspace(workspace)
    check_scope(faces)
    if app and not pull_only:
        check_port(address, port)  # a busy port is refused at once, not after importing FiftyOne and syncing
    connect()  # before anything is read or written: no database, nothing touched
    name = name or dataset_name(ws)
    if pull_only:
        dataset = load_dataset(ws, name)
        if dataset is None:
            raise ReviewError(f"workspace {ws.root} has no review dataset yet ({name}); run `curator review -w {ws.root}`")
        pulled = pull_tags(ws, dataset)
        for note in pulled["notes"]:
            on_note(note)
        return {"workspace": str(ws.root), "dataset": name, "samples_added": 0, "samples_total": len(dataset),
                "tags": _tag_counts(pulled), "url": None, "notes": pulled["notes"]}
    existing = load_dataset(ws, name)
    if existing is not None and dataset_version(ws, existing) == REVIEW_SCHEMA:
        pull_tags(ws, existing)  # tags left by a review that was killed reach the table before anything else
    summary = sync_dataset(ws, name, faces=faces)
    for note in summary["notes"]:
        on_note(note)
    dataset = load_dataset(ws, name)
    if app and not is_loopback(address):
        on_note(f"the App listens on {address}: anyone who can reach this machine can see and tag these faces (no login)")
    if app:
        with _landmarks_meanwhile(ws, dataset, summary) as ready:
            pulled = serve(ws, dataset, port=port, address=address, timeout=timeout,
                           on_ready=lambda url: (on_ready(url), ready()), on_note=on_note)
        summary["url"] = pulled.pop("url")
    else:
        if summary["landmarks_pending"]:
            done = fill_pending_landmarks(ws, dataset._sample_collection)
            summary["landmarks_pending"] = max(0, summary["landmarks_pending"] - done)
        pulled = pull_tags(ws, dataset)
        summary["url"] = None
    for note in pulled["notes"]:
        on_note(note)
    summary["notes"] += pulled["notes"]
    summary["tags"] = _tag_counts(pulled)
    return summary


@contextlib.contextmanager
def _landmarks_meanwhile(ws, dataset, summary: dict):
    """Add the landmarks sync left for later in a low-priority thread, from when the App is ready until it stops.

    The thread writes through its own pymongo calls on the dataset's
    collection (thread-safe), never through `dataset`, which the App's tag
    pulls use. What it has not done when the App stops, the next run does.
    """
    stop, thread = threading.Event(), None
    collection = dataset._sample_collection

    def work():
        nice_this_thread()
        try:
            done = fill_pending_landmarks(ws, collection, stop=stop)
            summary["landmarks_pending"] = max(0, summary["landmarks_pending"] - done)
        except Exception:  # noqa: BLE001 - landmarks are a help, not the review: the next run adds them
            pass

    def ready():
        nonlocal thread
        if summary["landmarks_pending"] and thread is None:
            thread = threading.Thread(target=work, name="curator-landmarks", daemon=True)
            thread.start()

    try:
        yield ready
    finally:
        stop.set()
        if thread is not None:
            thread.join()


def _tag_counts(pulled: dict) -> dict:
    return {k: pulled[k] for k in ("rejected", "kept", "other_tags", "changed", "written")}


def summary_line(s: dict) -> str:
    t = s["tags"]
    changes = [f"{s[k]} {what}" for k, what in (("samples_added", "added"), ("samples_removed", "removed")) if s.get(k)]
    head = (f"dataset {s['dataset']}: {s['samples_total']} faces"
            + (f" ({', '.join(changes)})" if changes else "")
            + (f" [--faces {s['faces']}]" if s.get("faces") else ""))
    if "views" in s:
        head += f", {len(s['views'])} saved views"
    return (head + f"; tags in the table: {t['rejected']} rejected, {t['kept']} kept, {t['other_tags']} with other tags"
            + f" ({t['changed']} faces changed)")

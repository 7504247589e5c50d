"""Crash-safe file writes and folder-safe names.

Every file curator writes goes through here: the data lands under a temporary
name in the same folder, is flushed to disk, then renamed over the target.
A crash or a full disk therefore leaves either the old file or the new one,
never half of either.
"""

from __future__ import annotations

import json
import os
import shutil
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` on success.

    The caller writes the whole file to the yielded path. On any exception the
    temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept so writers that pick a format from it (pyarrow, cv2) still work.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; give the result the permissions a plain open() would.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# What `atomic_path` names its temporary files: `.NAME.` + mkstemp's 8 random characters + `.tmp` + NAME's suffix.
_TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def half_written(folder: str | os.PathLike) -> list[Path]:
    """The temporary files `atomic_path` left in `folder` when its process was killed mid-write.

    Only the writer that owns `folder` may remove them (a live writer's file
    has the same name pattern): the workspace's lock holder does, on taking it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(".*.tmp*") if _TEMP_FILE.match(p.name) and p.is_file())


def temp_dir(target: str | os.PathLike) -> Path:
    """A new hidden folder beside `target` to build it in, with the permissions a plain mkdir would give.

    (mkdtemp makes 0700 folders, which other users of a shared export or
    output folder could not read.)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put `new` (a folder, or a file) at `target`; an existing `target` is removed only after.

    Where the filesystem can swap two names in one step (Linux's renameat2 with
    RENAME_EXCHANGE: ext4, XFS, Btrfs, tmpfs), `target` holds the old or the new
    at every instant, and the old ends up at `new`'s name to be removed. Elsewhere
    `target` is moved aside first, and a crash between the two renames leaves it
    missing, with the old beside it as `.NAME.old-PID`.
    """
    target = Path(target)
    if target.exists() and _exchange(Path(new), target):
        _remove(Path(new))  # the old one, now under the temporary name
        return
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one step; False where the system or filesystem cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a C library older than glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # this filesystem cannot swap names
        return False
    raise OSError(err, os.strerror(err), str(b))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    # numpy scalars and paths show up in summaries; write them as plain values.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_len: int = 120) -> str:
    """A file name that cannot leave its folder: no separators, no `..`, no leading dot."""
    cleaned = _UNSAFE.sub("_", name).strip("._") or "_"
    return cleaned[:max_len]


def inside(folder: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """Join `relative` under `folder`, refusing any result that escapes `folder`."""
    base = Path(folder).resolve()
    candidate = (base / relative).resolve()
    if candidate != base and base not in candidate.parents:
        raise ValueError(f"path {os.fspath(relative)!r} escapes {base}")
    return candidate

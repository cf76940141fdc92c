"""Files: atomic writes (temporary file in the same folder, then rename), strict JSON, a lock
that makes a run folder one run's, and clear errors for paths that cannot be written."""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import math
import os
import socket
import tempfile
import time
from contextlib import contextmanager

import numpy as np


class PathError(OSError):
    """A path that cannot be read or written, with a message that says which and why."""

    def __str__(self) -> str:
        return self.args[0]


def describe_oserror(e: OSError, action: str = "write") -> str:
    """One line for an OSError: what, where and why, without the errno number."""
    where = e.filename or "the path"
    why = e.strerror or str(e)
    if e.errno == errno.ENAMETOOLONG:
        why = "the name is too long"
    elif e.errno == errno.ENOTDIR:
        why = "a part of the path is a file, not a folder"
    elif e.errno == errno.EEXIST and os.path.exists(where) and not os.path.isdir(where):
        why = "it is a file, not a folder"
    elif e.errno == errno.EISDIR:
        why = "it is a folder"
    return f"cannot {action} {where}: {why}"


def umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def _temp_beside(path: str, suffix: str) -> str:
    """A new empty temporary file in the folder of ``path`` (created if needed)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=suffix, dir=folder)
    except OSError as e:
        raise PathError(describe_oserror(e)) from None
    os.close(fd)
    return tmp


@contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step
    (with the mode a new file gets under the umask), on failure it is removed, so readers
    never see a half-written file."""
    tmp = _temp_beside(path, suffix)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    """Strict JSON (NaN and infinities become null), atomically."""
    text = json.dumps(_strict(obj), indent=1, allow_nan=False, default=_jsonable)
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as fh:
        fh.write(text + "\n")


def read_json(path: str, what: str = "JSON file"):
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a valid {what}: {e.msg} at line {e.lineno}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a valid {what}: not text") from None
    except OSError as e:
        raise PathError(describe_oserror(e, "read")) from None


def write_npz(path: str, **arrays) -> None:
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def read_npz(path: str, what: str = "array file") -> dict[str, np.ndarray]:
    """All arrays of an .npz file (never pickled objects), or a ValueError saying it is not
    a readable one."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except OSError as e:
        if isinstance(e, FileNotFoundError | IsADirectoryError | PermissionError):
            raise PathError(describe_oserror(e, "read")) from None
        raise ValueError(f"{path} is not a readable {what}: {e}") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError (pickled data), ...
        raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {e})") from None


def check_writable(path: str) -> None:
    """Fail now, with a clear message, if a file cannot be written at ``path`` (before a long
    computation whose result would be lost)."""
    if os.path.isdir(path):
        raise PathError(f"cannot write {path}: it is a folder")
    os.remove(_temp_beside(path, ".check"))  # the target itself is not touched


def clean_stale_tmp(folder: str) -> list[str]:
    """Remove the temporary files that a killed writer left in ``folder``: those whose
    writer (the process id in the name, ``.tmp-PID-...``) is no longer running. A file of a
    running process (another command writing there now) is left alone."""
    removed = []
    for p in glob.glob(os.path.join(folder, ".tmp-*")):
        pid = os.path.basename(p).split("-")[1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            os.remove(p)
            removed.append(p)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has no write in progress when it cleans
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """An exclusive lock on a folder (``.corrtree.lock``, flock: released by the kernel if the
    process dies). A second holder is refused with the first one named."""

    NAME = ".corrtree.lock"

    def __init__(self, folder: str):
        self.folder = folder
        self.fd = None

    def __enter__(self):
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(os.path.join(self.folder, self.NAME), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise PathError(describe_oserror(e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 400).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RuntimeError(
                f"run folder {self.folder} is in use by {holder}; wait for it or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since {stamp}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _strict(o):
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_strict(v) for v in o]
    if isinstance(o, np.ndarray):
        return _strict(o.tolist())
    return o


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")

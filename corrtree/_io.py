"""Atomic file output: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager

import numpy as np


@contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step,
    on failure it is removed, so readers never see a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, default=_jsonable)
        fh.write("\n")


def read_json(path: str):
    with open(path) as fh:
        return json.load(fh)


def write_npz(path: str, **arrays) -> None:
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")

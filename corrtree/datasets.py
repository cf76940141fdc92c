"""Datasets that need no download: generated, bundled with scikit-learn, installed by Debian's
``dataset-fashion-mnist`` package, or the user's own files."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ._io import PathError, describe_oserror, read_npz
from ._validation import as_float_array, check_finite
from .nets import normalize_rows
from .nets.model import TASKS

__all__ = [
    "TASKS",
    "Dataset",
    "FASHION_MNIST_DIR",
    "binary_classes",
    "binary_targets",
    "load_dataset",
    "positive",
    "read_idx",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass
class Dataset:
    """Inputs ``X`` (n, d) and targets ``y``. ``labels`` holds integer class codes 0..C-1 for
    classification sets (None for regression), ``classes`` the label of each code as the
    data gave it (for binary targets over more than two classes: the two groups' names)."""

    name: str
    X: np.ndarray
    y: np.ndarray
    labels: np.ndarray | None = None
    classes: np.ndarray | None = None

    @property
    def task(self) -> str:
        return "regression" if self.labels is None else "classification"

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else int(self.classes.size)


def read_idx(path: str) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise PathError(describe_oserror(e, "read")) from None
    except (OSError, EOFError, zlib.error) as e:  # not gzip, truncated, corrupt
        raise ValueError(f"{path} is not a readable IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header is incomplete")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def positive(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Which points are positive in a binary task: of two classes, the second (the larger
    label: 1 of 0/1, +1 of -1/+1); of more, the lower half (0-4 of 10)."""
    if n_classes <= 2:
        return labels == 1
    return labels < (n_classes + 1) // 2


def binary_targets(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """+1 for the positive points (``positive``), -1 for the others."""
    C = int(labels.max()) + 1 if n_classes is None else n_classes
    return np.where(positive(labels, C), 1.0, -1.0)


def binary_classes(classes: np.ndarray) -> np.ndarray:
    """The two classes of a binary task over ``classes`` (negative, positive)."""
    if classes.size <= 2:
        return classes
    half = (classes.size + 1) // 2
    lo, hi = classes[:half], classes[half:]
    return np.array([f"{hi[0]}-{hi[-1]}", f"{lo[0]}-{lo[-1]}"])


def _fashion_mnist(data_dir: str | None, split: str):
    data_dir = data_dir or FASHION_MNIST_DIR
    img, lab = (os.path.join(data_dir, f) for f in _FASHION_FILES[split])
    for path in (img, lab):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Fashion-MNIST not found: {path} is missing. Install Debian's "
                "'dataset-fashion-mnist' package (apt-get install dataset-fashion-mnist) or "
                "pass --data-dir with the idx.gz files"
            )
    X = read_idx(img).reshape(-1, 28 * 28).astype(np.float64) / 255.0
    return X, read_idx(lab).astype(np.int64)


def _user_file(kind: str, path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{kind} file not found: {path}")
    if os.path.isdir(path):
        raise PathError(f"cannot read {path}: it is a folder, not a {kind} file")
    if kind == "svmlight":
        from sklearn.datasets import load_svmlight_file  # scikit-learn takes a second to import

        try:
            X, y = load_svmlight_file(path)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a readable svmlight file ({e})") from None
        return X.toarray(), y
    arrays = read_npz(path, "npz data file (arrays X and y)")
    missing = {"X", "y"} - set(arrays)
    if missing:
        raise ValueError(f"{path} must hold arrays 'X' and 'y'; missing {sorted(missing)}")
    return arrays["X"], arrays["y"]


def _whole(y: np.ndarray) -> bool:
    """Whether y is one column of whole numbers (integers, or floats like 1.0 and -1.0 as
    svmlight files write labels): class labels or integer-valued regression targets."""
    if y.ndim != 1 or y.size == 0:
        return False
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        return True
    if np.issubdtype(y.dtype, np.floating):
        return bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    return False


def _task_of(path: str, y: np.ndarray, task: str | None) -> str:
    """The task of a user's file: as declared, else regression for targets that are not
    whole numbers; whole numbers are refused undeclared (labels and counts look alike)."""
    if task is not None:
        if task == "classification" and not _whole(y):
            raise ValueError(
                f"{path}: --task classification needs class labels (whole numbers or "
                "strings), but y holds real values"
            )
        return task
    if not _whole(y) and y.dtype.kind in "fiub":
        return "regression"
    values = np.unique(y)
    raise ValueError(
        f"{path}: y holds {values.size} distinct whole values ({', '.join(map(str, values[:5]))}"
        f"{', ...' if values.size > 5 else ''}): say whether they are classes or numbers "
        "with --task classification or --task regression"
    )


def load_dataset(
    name: str,
    *,
    n: int | None = None,
    d: int = 32,
    seed: int = 0,
    data_dir: str | None = None,
    normalize: bool = True,
    targets: str = "onehot",
    split: str = "train",
    task: str | None = None,
) -> Dataset:
    """Load a dataset by name.

    ``name``: ``synthetic`` (seeded regression with ``n`` points in ``d`` dims, default n=1000),
    ``digits``, ``fashion-mnist``, ``svmlight:PATH`` or ``npz:PATH`` (arrays X and y).
    ``n`` keeps the first n points. ``normalize`` scales rows to unit norm (the default
    threshold assumes it). ``targets`` for classification sets: ``onehot`` (one output per
    class) or ``binary`` (one output: +1 for the positive points, see ``positive``).
    ``task``: "classification" or "regression"; None takes it from the data set (synthetic
    is regression, digits and Fashion-MNIST classification, a file's real-valued targets
    regression) and refuses to guess for a file whose targets are whole numbers.
    """
    if targets not in ("onehot", "binary"):
        raise ValueError(f"targets must be 'onehot' or 'binary', got {targets!r}")
    if task not in (None, *TASKS):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    if n is not None and (isinstance(n, bool) or int(n) < 1):
        raise ValueError(f"n must be >= 1, got {n}")
    labels = classes = None
    if name == "synthetic":
        rng = np.random.default_rng(seed)
        count = 1000 if n is None else n
        X = normalize_rows(rng.standard_normal((count, d)))
        teacher = rng.standard_normal(d)
        y = np.tanh(3 * X @ teacher / np.sqrt(d)) + 0.05 * rng.standard_normal(count)
    elif name == "digits":
        from sklearn.datasets import load_digits  # scikit-learn takes a second to import

        X, labels = load_digits(return_X_y=True)
        X = X / 16.0
        classes = np.arange(10)
    elif name == "fashion-mnist":
        if split not in _FASHION_FILES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        X, labels = _fashion_mnist(data_dir, split)
        classes = np.arange(10)
    elif name.startswith(("svmlight:", "npz:")):
        kind, path = name.split(":", 1)
        X, y = _user_file(kind, path)
        X = as_float_array(X, "X", 2)
        y = np.asarray(y)
        if _task_of(path, y, task) == "classification":
            classes, labels = np.unique(y, return_inverse=True)
            labels = labels.astype(np.int64)
        else:
            y = as_float_array(y, "y", y.ndim)
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    else:
        raise ValueError(
            f"unknown dataset {name!r}; choose synthetic, digits, fashion-mnist, "
            "svmlight:PATH or npz:PATH"
        )
    if n is not None and name != "synthetic":
        if n > X.shape[0]:
            raise ValueError(f"n={n} but {name} has only {X.shape[0]} points")
        X = X[:n]
        labels = None if labels is None else labels[:n]
        y = None if labels is not None else y[:n]
    own = "classification" if labels is not None else "regression"
    if task is not None and task != own:
        raise ValueError(f"{name} is a {own} data set, not {task}")
    if labels is not None:
        if labels.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but there are {labels.shape[0]} labels")
        C = classes.size
        if targets == "onehot":
            y = np.zeros((labels.size, C))
            y[np.arange(labels.size), labels] = 1.0
        else:
            y = binary_targets(labels, C)
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} holds no data: X has shape {X.shape}")
    check_finite(X, "X")
    if normalize:
        X = normalize_rows(X)
    return Dataset(name, X, y, labels, classes)

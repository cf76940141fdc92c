"""A run's configuration: every option of a training run as one typed, checked value, the
recipes, and the hash that identifies a run's trajectory."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from ..engines import ENGINES
from ..training import LOSSES, OPTIMIZERS, SCHEDULES

__all__ = ["RECIPES", "RunConfig", "RunFinished", "adam_lr", "config_hash"]


@dataclass
class RunConfig:
    dataset: str = "digits"
    n: int | None = None
    d: int = 32
    data_dir: str | None = None
    normalize: bool = True
    targets: str = "onehot"
    # classification or regression; None: the data set's own (refused for a file whose
    # targets are whole numbers, which could be either)
    task: str | None = None
    standardize: bool = False  # StandardScaler on the training points, before normalize
    test_size: float | None = None  # a seeded, stratified fraction never trained on
    width: int = 4096
    threshold: float | None = None
    steps: int | None = None
    epochs: int | None = None
    lr: float | None = None  # None: auto_lr
    batch_size: int | None = None
    engine: str = "auto"
    engine_options: dict | None = None
    dtype: str = "float64"
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int | None = None
    workers: int | None = None  # Ray workers, each training a block of neurons
    widths: list[int] | None = None  # hidden layers of a deep network (width then unused)
    # The recipe (corrtree.training.train's loss, optimizer, train_output, schedule): "paper" is the
    # paper's (squared loss, SGD, fixed output layer); "adam" is cross-entropy for classes
    # (logistic for --targets binary, squared for regression), lazy Adam and a trained output
    # layer. loss, optimizer and train_output override a part of it.
    recipe: str = "paper"
    loss: str | None = None
    optimizer: str | None = None
    train_output: bool | None = None
    schedule: str | None = None
    # Held-out evaluation while training: "test" (the dataset's test split) or a seeded,
    # stratified fraction of the training points; scored every eval_every steps (default:
    # each epoch); stop at target_accuracy or after patience evaluations without progress.
    eval: str | None = None
    val_fraction: float | None = None
    eval_every: int | None = None
    target_accuracy: float | None = None
    patience: int | None = None

    def validated(self) -> RunConfig:
        """This configuration checked, with its defaults filled in: a new value (``self`` is
        left as it is). Raises ValueError or TypeError naming the bad field."""
        changes: dict = {}
        if self.engine not in ENGINES and self.engine != "auto":
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {sorted(ENGINES)}")
        if self.engine_options is not None and not isinstance(self.engine_options, dict):
            raise TypeError(f"engine_options must be a dict, got {self.engine_options!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.steps is None and self.epochs is None:
            changes["steps"] = 20
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        for name in (
            "width",
            "steps",
            "epochs",
            "batch_size",
            "checkpoint_every",
            "threads",
            "n",
            "workers",
        ):
            v = getattr(self, name)
            if v is None and name != "width":
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an integer, got {v!r}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name in ("lr", "threshold"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise TypeError(f"{name} must be a number, got {v!r}")
        if self.widths is not None:
            if (
                not isinstance(self.widths, list | tuple)
                or not self.widths
                or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths)
            ):
                raise ValueError(f"widths must be positive integers, got {self.widths!r}")
            changes["widths"] = list(self.widths)
            changes["width"] = sum(self.widths)
            if self.workers:
                raise ValueError(
                    "--workers shards a two-layer network; deep (--widths) runs "
                    "train in one process"
                )
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
            )
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of {sorted(SCHEDULES)}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.task not in (None, "classification", "regression"):
            raise ValueError(f"task must be classification or regression, got {self.task!r}")
        if not isinstance(self.standardize, bool):
            raise TypeError(f"standardize must be True or False, got {self.standardize!r}")
        if self.test_size is not None and not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        if self.eval not in (None, "test"):
            raise ValueError(f"eval must be 'test' or None, got {self.eval!r}")
        if self.val_fraction is not None:
            if self.eval is not None:
                raise ValueError("give --eval test or --val-fraction, not both")
            if not 0 < self.val_fraction < 1:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        held_out = self.eval is not None or self.val_fraction is not None
        for name in ("eval_every", "target_accuracy", "patience"):
            if getattr(self, name) is not None and not held_out:
                raise ValueError(f"{name} needs a held-out set: --eval test or --val-fraction F")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.threshold is not None and not (
            self.threshold >= 0 and math.isfinite(self.threshold)
        ):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold}")
        return replace(self, **changes)

    def parts(self, classes: bool) -> tuple[str, str, bool]:
        """(loss, optimizer, train_output) of the run: the recipe's, with the overrides."""
        if self.recipe == "paper":
            loss, optimizer, train_output = "squared", "sgd", False
        else:
            loss = (
                "squared"
                if not classes
                else {"onehot": "cross_entropy"}.get(self.targets, "logistic")
            )
            optimizer, train_output = "adam", True
        return (
            self.loss or loss,
            self.optimizer or optimizer,
            train_output if self.train_output is None else self.train_output,
        )

    def total_steps(self, n: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = 1 if self.batch_size is None else math.ceil(n / self.batch_size)
        return self.epochs * per_epoch

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def as_dict(self) -> dict:
        return asdict(self)


class RunFinished(ValueError):
    """``--resume`` of a run that has done all its steps."""


RECIPES = ("adam", "paper")


def adam_lr(steps: int) -> float:
    """The adam recipe's default learning rate for a run of ``steps`` steps: 1 / steps,
    within [1e-3, 1e-2]. Adam moves each weight by about lr per step, so over the run a
    weight can move by about its initial scale (w ~ N(0, 1)): 1e-3 (torch's default) for
    runs of 1000 steps and more, up to 1e-2 for runs of 100 steps or fewer. On digits
    (width 4096, 20 full-batch steps) 1e-3 reached 0.34 training accuracy and 1e-2 0.92."""
    return min(1e-2, max(1e-3, 1.0 / max(1, steps)))


# Options added after the first run folders were written: left out of the hash at these
# values, so that those runs keep their hash (and resume).
_LATER = {
    "recipe": "paper",
    "loss": None,
    "optimizer": None,
    "train_output": None,
    "schedule": None,
    "eval": None,
    "val_fraction": None,
    "eval_every": None,
    "target_accuracy": None,
    "patience": None,
    "task": None,
    "standardize": False,
    "test_size": None,
}


def config_hash(cfg: RunConfig) -> str:
    """What identifies a run's trajectory: everything but its length, threads and
    checkpointing. A checkpoint carries it; resume refuses one that does not match."""
    keep = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("steps", "epochs", "threads", "checkpoint_every", "workers")
        and not (k in _LATER and v == _LATER[k])
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

"""Training: the step and the stepper protocol (``step``), the loop (``loop``), losses,
optimizers and schedules, and the deep networks' engine (``deep``)."""

from .._blas import thread_limit
from . import deep as _deep  # noqa: F401  (registers the deep network's stepper)
from .loop import DivergenceError, History, auto_lr, batch_schedule, train
from .losses import LOSSES, CrossEntropy, Logistic, Loss, Squared, get_loss
from .optim import OPTIMIZERS, SCHEDULES, SGD, Adam, Momentum, Optimizer, get_optimizer
from .step import Plan, Stepper, StepperLost, shard, stepper_for, take_step

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "CrossEntropy",
    "DivergenceError",
    "History",
    "Logistic",
    "Loss",
    "Momentum",
    "Optimizer",
    "Plan",
    "Squared",
    "Stepper",
    "StepperLost",
    "auto_lr",
    "batch_schedule",
    "get_loss",
    "get_optimizer",
    "shard",
    "stepper_for",
    "take_step",
    "thread_limit",
    "train",
]

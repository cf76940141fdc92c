import os

# Ray (distributed tests) listens and connects on 127.0.0.1 only with this set; set before
# any test imports Ray.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np
import pytest

from corrtree.training.step import EngineStepper, Plan


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


class Stepper(EngineStepper):
    """The training loop's stepper for one engine, driven step by step; attributes not
    defined here are the engine's."""

    def __init__(self, engine, net, X, Y, **options):
        super().__init__(net, X, Y, Plan(lr=0.0, engine=engine, engine_options=options or None))

    def step(self, lr, rows=None):
        return self.advance(lr, rows)

    def __getattr__(self, name):
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

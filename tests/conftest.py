import os

# Ray (distributed tests) listens and connects on 127.0.0.1 only with this set; set before
# any test imports Ray.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


class Stepper:
    """An engine driven by the training loop's step, as ``train`` drives it; attributes not
    defined here are the engine's."""

    def __init__(self, engine, net, X, Y, **options):
        from corrtree.engines import make_engine

        self.engine = make_engine(engine, net, X, options or None)
        self.Y = Y

    def step(self, lr, rows=None):
        from corrtree.training import take_step

        return take_step(self.engine, self.Y, lr, rows)

    def __getattr__(self, name):
        return getattr(self.engine, name)

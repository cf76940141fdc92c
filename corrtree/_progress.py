"""Progress bars for the long passes (index builds, scoring many points), drawn on stderr
while a caller has switched them on: ``train(progress=True)``, the estimators' ``verbose``
and the command line (unless ``--quiet``) do. A pass that ends within two seconds draws
nothing, so short passes stay silent."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

_SHOWN = ContextVar("corrtree_progress", default=False)
DELAY = 2.0  # seconds a pass runs before its bar appears


@contextlib.contextmanager
def shown(on: bool = True):
    """Within this block, long passes draw progress bars (``on=False``: they do not)."""
    token = _SHOWN.set(bool(on))
    try:
        yield
    finally:
        _SHOWN.reset(token)


def bar(total: int, desc: str, unit: str = "point", *, delay: float | None = None, leave=False):
    """A tqdm bar over ``total`` units when bars are shown (drawn once the pass has run
    ``delay`` seconds, default ``DELAY``), else one that draws nothing."""
    if not _SHOWN.get():
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=total >= 100_000,  # 60.0k points, not 60000
        delay=DELAY if delay is None else delay,
        leave=leave,
        mininterval=0.5,
    )


class _Silent:
    """The bar of a pass when bars are off: every call does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

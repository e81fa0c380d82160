"""Task functions of the benchmark graphs.

They live in a module (not in ``__main__``) so that every worker process, of every scheduler, imports them by name:
``benchmarks.tasks`` is importable when the runner starts from the repository root, and the runner puts that root
on ``PYTHONPATH`` for its child processes.
"""

from __future__ import annotations

import time
from typing import Any


def noop(x: Any = None) -> Any:
    """Return ``x``: a task that costs nothing but scheduling."""
    return x


def sleep(x: Any, seconds: float) -> Any:
    """Sleep ``seconds`` then return ``x``: a task whose cost is known (for parallel efficiency)."""
    time.sleep(seconds)
    return x


def add(*xs: Any) -> Any:
    """Sum the arguments (a reduction step)."""
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


def make_array(n: int) -> Any:
    """A float64 array of ``n`` ones (every page touched): the head of the transfer chain."""
    import numpy as np

    return np.ones(n, dtype=np.float64)


def plus_one(a: Any) -> Any:
    """``a + 1``: a new array as large as ``a`` (the middle of the transfer chain)."""
    return a + 1


def total(a: Any) -> float:
    """The sum of ``a`` as a Python float (the tail of the transfer chain: a scalar result)."""
    return float(a.sum())

"""Task functions of the executor's tests (``tests/test_executor.py``): importable by worker processes."""

from __future__ import annotations

import time
from typing import Any


def stamp(i: int, seconds: float = 0.0) -> tuple[int, float]:
    """Sleep ``seconds``, then return ``i`` and the wall-clock time the task ended (the worker's clock)."""
    if seconds:
        time.sleep(seconds)
    return i, time.time()


def total(obj: Any) -> float:
    """The sum of every array in a nest of lists, tuples and dicts."""
    if isinstance(obj, dict):
        return sum(total(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(total(v) for v in obj)
    return float(obj.sum())

"""Tasks for the resume tests: each counts its execution in a file (a side channel the project does not see)."""

from __future__ import annotations

import os
import time
from typing import Any


def _count(path: str, label: Any) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {label}\n")


def counted_block(block: Any, path: str, seconds: float) -> Any:
    """A dask.array block, doubled, after ``seconds``; counted after the sleep (so a line means it finished)."""
    time.sleep(seconds)
    _count(path, "block")
    return block * 2


def counted_frame(frame: Any, path: str, seconds: float) -> Any:
    """A dask.dataframe partition, unchanged, after ``seconds``; counted."""
    time.sleep(seconds)
    _count(path, "frame")
    return frame


def counted_leaf(path: str, i: int, seconds: float) -> int:
    """``i * i`` after ``seconds``; counted."""
    time.sleep(seconds)
    _count(path, f"leaf {i}")
    return i * i


def counted_add(path: str, seconds: float, *xs: int) -> int:
    """The sum of ``xs`` after ``seconds``; counted."""
    time.sleep(seconds)
    _count(path, "add")
    return sum(xs)


def counted_square(x: int, path: str, seconds: float) -> int:
    """``x * x`` after ``seconds``; counted (map and iterate elements)."""
    time.sleep(seconds)
    _count(path, f"square {x}")
    return x * x

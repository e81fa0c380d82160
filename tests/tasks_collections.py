"""Task functions for ``tests/test_collections.py``, importable by worker processes (``tests.tasks_collections``)."""

from __future__ import annotations

import os
import time


def double(x: int) -> int:
    return 2 * x


def square(x: int) -> int:
    return x * x


def is_odd(x: int) -> bool:
    return x % 2 == 1


def mod3(x: int) -> int:
    return x % 3


def add_to(total: int, x: int) -> int:
    return total + x


def add(x: int, y: int) -> int:
    return x + y


def pid_of(_: object = None) -> int:
    """The PID of the process that ran the task."""
    return os.getpid()


def tmp_device(seconds: float) -> int:
    """After ``seconds``, the device of the file system at ``/tmp`` of the process that ran the task."""
    time.sleep(seconds)
    return os.stat("/tmp").st_dev

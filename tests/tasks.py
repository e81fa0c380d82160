"""Task functions for the tests: importable by worker processes (``tests.tasks``), unlike test-local functions."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from typing import Any


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def noop(x: Any = None) -> Any:
    return x


def getpid(_: Any = None) -> int:
    """The PID of the worker process that ran the task."""
    return os.getpid()


def sleep_then_pid(seconds: float, _: Any = None) -> int:
    time.sleep(seconds)
    return os.getpid()


def slow_inc(x: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)
    return x + 1


def divide(x: float, y: float) -> float:
    return x / y


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def touch(path: str, value: Any = None) -> Any:
    """Create ``path`` (a side effect the test can look for) and pass ``value`` on."""
    pathlib.Path(path).write_text("ran")
    return value


def make_array(nbytes: int, fill: float, _: Any = None) -> Any:
    import numpy as np

    return np.full(nbytes // 8, fill, dtype="f8")


def add_one_array(a: Any) -> Any:
    return a + 1


def array_sum(a: Any) -> float:
    return float(a.sum())


def make_lock(_: Any = None) -> Any:
    """A result that cannot be pickled."""
    return threading.Lock()


class Unpicklable:
    """An argument that cannot be pickled."""

    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable objects refuse to be pickled")


class CustomError(Exception):
    """An exception type defined outside the standard library."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


def raise_custom(code: int) -> None:
    raise CustomError("custom failure", code)


def slow_fail(seconds: float) -> None:
    time.sleep(seconds)
    raise ValueError("slow failure")


def exit_if_pid(victim: int, _: Any = None) -> int:
    """Kill the worker process whose PID is ``victim`` (as R's ``quit()`` in RedisParam's tests)."""
    if os.getpid() == victim:
        os._exit(1)
    time.sleep(0.05)
    return os.getpid()


def always_exit(_: Any = None) -> None:
    os._exit(1)


def stuck_in_c(seconds: float) -> None:
    """Block in C code, where no Python signal handler runs, for ``seconds``."""
    import ctypes

    ctypes.CDLL(None).sleep(int(seconds))


def python_loop(seconds: float) -> None:
    """Busy Python code for ``seconds`` (interruptible by a signal)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def sys_exit(_: Any = None) -> None:
    import sys

    sys.exit(3)


def fail_first_times(path: str, times: int) -> int:
    """Raise until called ``times`` times (counted in the file ``path``), then return the count."""
    p = pathlib.Path(path)
    n = int(p.read_text()) + 1 if p.exists() else 1
    p.write_text(str(n))
    if n <= times:
        raise ValueError(f"attempt {n} fails")
    return n


def sleep_leaf(i: int, seconds: float = 0.02) -> int:
    time.sleep(seconds)
    return i


def sum_all(*xs: int) -> int:
    return sum(xs)


def sqrt(x: Any) -> float:
    """As R's ``sqrt``: fails for a string ("non-numeric argument to mathematical function")."""
    import math

    if isinstance(x, str):
        raise TypeError("non-numeric argument to mathematical function")
    return math.sqrt(x)


def random_triplet(_: Any = None) -> tuple[float, float, float]:
    """One number from each of Python's random, NumPy's global state and task_rng()."""
    import random

    import numpy as np

    from dask_redisparam import task_rng

    return (random.random(), float(np.random.random()), float(task_rng().random()))


def fail_if_flagged(path: str, value: int) -> int:
    """Fail while the file ``path`` exists (a failure that a redo can get past)."""
    if pathlib.Path(path).exists():
        raise RuntimeError(f"flagged: {value}")
    return value


def count_call(path: str, value: Any) -> Any:
    """Append a line to ``path`` per call (counts executions) and pass ``value`` on."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def log_and_print(message: str, fail: bool = False) -> str:
    """Log a warning and print ``message``; raise afterwards if ``fail``."""
    import logging

    logging.getLogger("user.task").warning("logged: %s", message)
    print(f"printed: {message}")
    if fail:
        raise RuntimeError(f"failed after logging {message}")
    return message


def element_random(x: Any) -> float:
    """A number from task_rng() (per element, in map/iterate)."""
    from dask_redisparam import task_rng

    return float(task_rng().random())


def counted_inc(path: str, x: int) -> int:
    """Increment, counting executions by appending to ``path``."""
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x + 1


def concat(a: str, b: str) -> str:
    return a + b


def element_random_or_fail(x: Any) -> float:
    """As :func:`element_random`, but fails for a string."""
    if isinstance(x, str):
        raise ValueError(f"bad element {x!r}")
    return element_random(x)


def counted_inc_item(x: int, path: str) -> int:
    """Increment (failing for a string), counting executions in ``path``."""
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x + 1


def read_config_and_env(key: str, env: str) -> tuple[Any, str | None]:
    """The worker's view of a dask config key and an environment variable, during the task."""
    import dask.config

    return dask.config.get(key, None), os.environ.get(env)


def counted_slow_inc(path: str, x: int, seconds: float) -> int:
    """Sleep, count the execution in ``path``, increment."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x + 1


def huge_bytes(nbytes: int) -> bytes:
    return b"x" * nbytes


def counted_make_array(path: str, nbytes: int, fill: float) -> Any:
    """As :func:`make_array`, counting executions by appending a line to ``path``."""
    with open(path, "a") as f:
        f.write("made\n")
    return make_array(nbytes, fill)


def slow_array_sum(a: Any, seconds: float) -> float:
    """Sleep ``seconds``, then sum the array."""
    time.sleep(seconds)
    return float(a.sum())


def array_sum_unless_flagged(path: str, a: Any) -> float:
    """Sum the array; fail while the file ``path`` exists (a failure that a redo can get past)."""
    if pathlib.Path(path).exists():
        raise RuntimeError("flagged")
    return float(a.sum())


def touch_then_slow_inc(path: str, x: float, seconds: float) -> float:
    """Create ``path`` when the task starts, sleep ``seconds``, increment."""
    pathlib.Path(path).write_text("started")
    time.sleep(seconds)
    return x + 1


def counted_block(block: Any, path: str) -> Any:
    """Pass an array block on, counting executions by appending its shape to ``path`` (for ``map_blocks``, which
    also calls it on tiny blocks of shapes (0, 0) and (1, 1) as the graph is built, to infer the output's type)."""
    with open(path, "a") as f:
        f.write(f"{block.shape}\n")
    return block

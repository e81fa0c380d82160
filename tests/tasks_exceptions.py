"""Tasks that raise exceptions the manager cannot rebuild as themselves (importable on the workers)."""

from __future__ import annotations

import importlib
import threading
from typing import Any


class TwoArgsError(Exception):
    """Pickles, but does not unpickle: ``args`` holds one message, ``__init__`` wants two arguments."""

    def __init__(self, quota: str, used: int) -> None:
        super().__init__(f"quota {quota} exceeded by {used}")


class ReduceRaisesError(Exception):
    """Refuses to be pickled: its ``__reduce__`` raises."""

    def __reduce__(self) -> Any:
        raise RuntimeError("ReduceRaisesError will not be pickled")


class LockedError(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_two_args(_: Any = None) -> None:
    raise TwoArgsError("disk", 7)


def raise_reduce_raises(_: Any = None) -> None:
    raise ReduceRaisesError("reduce refuses")


def raise_locked(_: Any = None) -> None:
    raise LockedError("holds a lock")


def raise_from_module(module: str, _: Any = None) -> None:
    """Call ``fail()`` of ``module``, a module that exists on the workers' ``sys.path`` only."""
    importlib.import_module(module).fail()


def raise_value_error(_: Any = None) -> None:
    raise ValueError("an ordinary failure")


def element(kind: str, module: str = "") -> str:
    """For ``map``: raise the exception named by ``kind`` (see :data:`RAISERS`), or return ``kind``."""
    if kind == "module":
        raise_from_module(module)
    if kind in RAISERS:
        RAISERS[kind]()
    return kind


RAISERS = {
    "two_args": raise_two_args,
    "reduce_raises": raise_reduce_raises,
    "locked": raise_locked,
    "value_error": raise_value_error,
}

"""The manager and Python's cyclic garbage collector: rarer collections while computes run, long-lived objects
frozen.

A compute builds a graph and a state of a few objects per task that live until its end. With Python's default
thresholds the collector scans them again and again (30 % of the manager's time at 100,000 tasks), and a full
collection at millions of tasks holds the GIL for seconds: longer than the run's lease on a busy machine, which a
thread of the manager renews (the run would be lost). So while computes run, :func:`fewer_collections` raises the
young generation's threshold and :func:`freeze_long_lived` moves what exists out of the collector's reach
(``gc.freeze``); :func:`collect_new_garbage` collects what was made since (the cycles dask.order leaves behind).

Examples
--------
>>> with fewer_collections():
...     freeze_long_lived()
...     gc.get_freeze_count() > 0
True
>>> gc.get_freeze_count()
0
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["FREEZE_TASKS", "GC_THRESHOLD", "collect_new_garbage", "fewer_collections", "freeze_long_lived"]

_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] = (700, 10, 10)

GC_THRESHOLD = 50_000
"""Allocations between two young collections of Python's cyclic GC while a compute runs (Python's default: 700)."""
FREEZE_TASKS = 100_000
"""Tasks finished between two :func:`freeze_long_lived` of a run (not of a fed, long-lived one: its garbage cycles
would wait for its end)."""


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Make Python's cyclic garbage collector run rarely meanwhile.

    A compute allocates a few objects per task that live until its end (the graph, the state); with the default
    thresholds, Python scans all of them again and again: 30 % of the manager's time at 100,000 tasks. Garbage is
    still collected, 70 times less often; concurrent computes share one setting, restored when the last one ends.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(GC_THRESHOLD, *_gc_saved[1:])
        _gc_users += 1
    freeze_long_lived()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


def freeze_long_lived() -> None:
    """While a compute runs, put every object that exists now out of the cyclic collector's reach (``gc.freeze``).

    A full collection scans every tracked object while it holds the GIL: about 0.5 s of CPU per million tasks of
    graph and state, seconds at ten million, and on a busy machine more than the run's lease (``RUN_TTL``), which a
    thread renews, so the run would be lost. Frozen objects are still freed when unreferenced; cycles among them
    wait until the last compute ends (:func:`fewer_collections` unfreezes them). Called as a compute starts, once
    its graph and state are built, and as its tasks finish (every :data:`FREEZE_TASKS`).
    """
    if _gc_users > 0:
        gc.freeze()


def collect_new_garbage() -> None:
    """While a compute runs, collect the garbage cycles made since the last :func:`freeze_long_lived` (a full
    collection, but of the objects made since: dask.order leaves ~1 KB a task of cycles, which a freeze would
    otherwise keep until the end)."""
    if _gc_users > 0:
        gc.collect()

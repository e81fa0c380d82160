"""The manager makes Python's cyclic garbage collector run rarely while computes run, and restores it after."""

from __future__ import annotations

import gc
from collections.abc import Callable

from dask.callbacks import Callback

from dask_redisparam import RedisParam
from dask_redisparam.manager.loop import GC_THRESHOLD, fewer_collections, freeze_long_lived
from tests import tasks
from tests.conftest import CliWorkers


def test_fewer_collections_sets_and_restores_the_threshold() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == GC_THRESHOLD
        with fewer_collections():  # nested (or concurrent): one setting, restored by the last one out
            assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_threshold()[0] == GC_THRESHOLD
    assert gc.get_threshold() == before


def test_a_compute_runs_with_fewer_collections(manager: RedisParam, cli_workers: Callable[..., CliWorkers]) -> None:
    seen: list[tuple[int, int, int]] = []
    before = gc.get_threshold()

    def watch(key: object, result: object, dsk: object, state: object, worker: object) -> None:
        seen.append(gc.get_threshold())

    cli_workers(1)
    with Callback(posttask=watch):  # type: ignore[no-untyped-call]
        assert manager({"x": (tasks.inc, 1)}, "x") == 2
    assert seen and seen[0][0] == GC_THRESHOLD
    assert gc.get_threshold() == before


def test_long_lived_objects_are_frozen_while_computes_run() -> None:
    """A full collection would scan the graph and state of a large run while holding the GIL (seconds at 10M
    tasks: longer than the run's lease): they are frozen meanwhile, and given back to the collector after."""
    assert gc.get_freeze_count() == 0
    with fewer_collections():
        kept = [[i] for i in range(1000)]  # long-lived objects made during the compute
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(kept)
    assert gc.get_freeze_count() == 0
    freeze_long_lived()  # outside a compute: nothing
    assert gc.get_freeze_count() == 0

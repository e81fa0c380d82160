"""dask collections computed through a started ``RedisParam`` (embedded redis-server, 2 local worker processes).

Every result is compared with the one dask's ``sync`` scheduler gives for the same collection. Task functions live
in ``tests.tasks_collections`` so that the worker processes can import them.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Hashable, Iterator
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import psutil
import pytest
from dask.callbacks import Callback
from dask.diagnostics import CacheProfiler, Profiler, ProgressBar

from dask_redisparam import IgnoredOptionWarning, PersistedDownloadWarning, RedisParam

from .tasks_collections import add, add_to, double, is_odd, mod3, pid_of, square


@pytest.fixture(scope="module")
def param() -> Iterator[RedisParam]:
    """One started param for the module: embedded server and 2 local worker processes."""
    with RedisParam(workers=2) as p:
        yield p


def on_param_and_sync(param: RedisParam, *collections: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """``dask.compute(*collections)`` through ``param`` and through the ``sync`` scheduler."""
    return dask.compute(*collections, scheduler=param), dask.compute(*collections, scheduler="sync")


class GraphSpy:
    """A ``get`` that records the task graphs it is given and passes them on to ``param``."""

    def __init__(self, param: RedisParam) -> None:
        self.param = param
        self.graphs: list[dict[Hashable, Any]] = []

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.graphs.append(dict(dsk.__dask_graph__()))
        return self.param(dsk, keys, **kwargs)


# ---------------------------------------------------------------------------------------------------- set-up


def test_tasks_run_in_the_worker_processes(param: RedisParam) -> None:
    assert param.is_up and len(param.worker_ids()) == 2
    pids = set(dask.compute(*[dask.delayed(pid_of)(i) for i in range(8)], scheduler=param))
    children = {child.pid for child in psutil.Process().children(recursive=True)}
    assert os.getpid() not in pids
    assert pids and pids <= children, (pids, children)


# ---------------------------------------------------------------------------------------------------- delayed


def test_delayed_diamond(param: RedisParam) -> None:
    top = dask.delayed(square)(3)
    left, right = dask.delayed(double)(top), dask.delayed(square)(top)
    bottom = dask.delayed(add)(left, right)
    ours, reference = on_param_and_sync(param, bottom)
    assert ours == reference == (2 * 9 + 81,)


def test_delayed_list(param: RedisParam) -> None:
    values = [dask.delayed(double)(i) for i in range(20)]
    total = dask.delayed(sum)(values)
    ours, reference = on_param_and_sync(param, values, total)
    assert ours == reference == ([2 * i for i in range(20)], 2 * sum(range(20)))
    assert isinstance(ours[0], list)


# ---------------------------------------------------------------------------------------------------- array


def test_array_reductions(param: RedisParam) -> None:
    x = da.random.default_rng(42).random((120, 120), chunks=(40, 30))
    y = da.from_array(np.arange(120 * 120, dtype="f8").reshape(120, 120), chunks=50)
    collections = ((x + x.T).sum(), (x + x.T).mean(axis=0), (x @ y).std(axis=1), y.max())
    ours, reference = on_param_and_sync(param, *collections)
    for got, expected in zip(ours, reference, strict=True):
        assert isinstance(got, np.ndarray | np.floating)
        np.testing.assert_array_equal(got, expected)
    assert ours[1].shape == (120,)
    assert ours[3] == 120 * 120 - 1


def test_array_rechunk(param: RedisParam) -> None:
    data = np.arange(60 * 48).reshape(60, 48)
    x = da.from_array(data, chunks=(7, 48)).rechunk((30, 5))
    assert x.chunks == ((30, 30), (5,) * 9 + (3,))
    (ours,), (reference,) = on_param_and_sync(param, x + 1)
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(ours, data + 1)


# ---------------------------------------------------------------------------------------------------- bag


def test_bag_map_filter_sum(param: RedisParam) -> None:
    b = db.from_sequence(range(100), npartitions=6)
    odd_squares = b.map(square).filter(is_odd)
    ours, reference = on_param_and_sync(param, odd_squares, odd_squares.sum(), b.count())
    assert ours == reference
    assert ours[0] == [i * i for i in range(100) if i % 2]
    assert ours[1] == sum(i * i for i in range(100) if i % 2)
    assert ours[2] == 100


def test_bag_foldby(param: RedisParam) -> None:
    b = db.from_sequence(range(1000), npartitions=7)
    folded = b.foldby(mod3, add_to, 0, add, 0)
    (ours,), (reference,) = on_param_and_sync(param, folded)
    assert sorted(ours) == sorted(reference) == [(r, sum(range(r, 1000, 3))) for r in range(3)]


# ---------------------------------------------------------------------------------------------------- dataframe


@pytest.fixture(scope="module")
def pdf() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {"a": rng.integers(0, 13, 400), "b": rng.permutation(400).astype("f8"), "c": rng.standard_normal(400)}
    )


def test_dataframe_groupby_aggregate(param: RedisParam, pdf: pd.DataFrame) -> None:
    ddf = dd.from_pandas(pdf, npartitions=5)
    aggregated = ddf.groupby("a").agg({"b": ["sum", "count"], "c": ["mean", "max"]})
    means = ddf.groupby("a").c.mean()
    ours, reference = on_param_and_sync(param, aggregated, means)
    pd.testing.assert_frame_equal(ours[0].sort_index(), reference[0].sort_index())
    pd.testing.assert_series_equal(ours[1].sort_index(), reference[1].sort_index())
    expected = pdf.groupby("a").agg({"b": ["sum", "count"], "c": ["mean", "max"]})
    pd.testing.assert_frame_equal(ours[0].sort_index(), expected, check_exact=False)


def test_dataframe_task_shuffle(param: RedisParam, pdf: pd.DataFrame) -> None:
    ddf = dd.from_pandas(pdf, npartitions=5)
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        shuffled = ddf.shuffle("a", npartitions=4)
        ours = dask.compute(*shuffled.to_delayed(), scheduler=param)
        reference = dask.compute(*shuffled.to_delayed(), scheduler="sync")
    assert len(ours) == len(reference) == 4
    for got, expected in zip(ours, reference, strict=True):
        pd.testing.assert_frame_equal(got, expected)
    owners = Counter(a for part in ours for a in set(part["a"]))
    assert set(owners.values()) == {1}, "after a shuffle on 'a', each value of 'a' is in exactly one partition"
    together = pd.concat(ours).sort_values("b")
    pd.testing.assert_frame_equal(together, pdf.sort_values("b"))


def test_dataframe_task_shuffle_set_index(param: RedisParam, pdf: pd.DataFrame) -> None:
    ddf = dd.from_pandas(pdf.sample(frac=1.0, random_state=3), npartitions=5)
    with dask.config.set({"dataframe.shuffle.method": "tasks", "scheduler": param}):
        indexed = ddf.set_index("b")
        (ours,) = dask.compute(indexed)
    with dask.config.set({"dataframe.shuffle.method": "tasks", "scheduler": "sync"}):
        (reference,) = dask.compute(ddf.set_index("b"))
    pd.testing.assert_frame_equal(ours, reference)
    assert ours.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(ours, pdf.set_index("b").sort_index())


# ---------------------------------------------------------------------------------------------------- persist


def test_persist_round_trip(param: RedisParam) -> None:
    x = da.arange(100, chunks=10) * 3
    d = dask.delayed(double)(dask.delayed(square)(5))
    px, pd_ = dask.persist(x, d, scheduler=param)
    assert px.chunks == x.chunks
    graph = dict(px.__dask_graph__())
    assert len(graph) == 10  # one small reference per chunk: the values stay in Redis (tests/test_persist.py)
    assert not any(isinstance(v, np.ndarray) for v in graph.values()), "persist brought the values home"
    with pytest.warns(PersistedDownloadWarning):  # another scheduler downloads them (one warning per persist)
        np.testing.assert_array_equal(px.compute(scheduler="sync"), np.arange(100) * 3)
    assert pd_.compute(scheduler="sync") == 50
    assert pd_.compute(scheduler=param) == 50
    # the persisted collections compute again through the param
    assert int(px.sum().compute(scheduler=param)) == 3 * sum(range(100))


# ---------------------------------------------------------------------------------------------------- callbacks


class StateRecorder(Callback):
    """Records what ``ProgressBar`` reads from the scheduler state, after each task and at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.done_counts: list[int] = []
        self.end: tuple[int, int, bool] | None = None

    def _posttask(self, key: Hashable, result: Any, dsk: Any, state: dict[str, Any], worker_id: Any) -> None:
        self.done_counts.append(len(state["finished"]))

    def _finish(self, dsk: Any, state: dict[str, Any], failed: bool) -> None:
        pending = sum(len(state[k]) for k in ("ready", "waiting", "running"))
        self.end = (len(state["finished"]), pending, failed)


def test_progressbar_reaches_100_percent(param: RedisParam) -> None:
    x = da.ones((100, 100), chunks=10)
    out = io.StringIO()
    spy = GraphSpy(param)
    with ProgressBar(out=out, dt=0.005), StateRecorder() as recorder:
        result = (x + x.T).sum().compute(scheduler=spy)
    assert result == 2 * 100 * 100
    assert "100% Completed" in out.getvalue()
    ntasks = len(spy.graphs[0])
    assert recorder.end == (ntasks, 0, False)
    assert recorder.done_counts == sorted(recorder.done_counts)
    assert recorder.done_counts[-1] == ntasks


def test_profiler_and_cache_profiler_record_each_task(param: RedisParam) -> None:
    x = da.ones((60, 60), chunks=20)
    delayed_total = dask.delayed(sum)([dask.delayed(double)(i) for i in range(6)])
    spy = GraphSpy(param)
    with Profiler() as prof, CacheProfiler() as cprof:
        results = dask.compute((x + 1).sum(axis=0), delayed_total, scheduler=spy)
    np.testing.assert_array_equal(results[0], np.full(60, 120.0))
    assert results[1] == 30
    (graph,) = spy.graphs
    profiled = Counter(r.key for r in prof.results)
    assert set(profiled) == set(graph) and set(profiled.values()) == {1}
    cached = Counter(r.key for r in cprof.results)
    assert set(cached) == set(graph) and set(cached.values()) == {1}
    workers = set(param.worker_ids())
    for r in prof.results:
        assert r.start_time <= r.end_time
        assert r.worker_id in workers
    for c in cprof.results:
        assert c.metric == 1 and c.cache_time <= c.free_time


# ---------------------------------------------------------------------------------------------------- kwargs


def test_unknown_compute_kwargs_are_ignored_with_a_warning(param: RedisParam) -> None:
    x = da.arange(50, chunks=7).sum()
    d = dask.delayed(double)(21)
    with pytest.warns(IgnoredOptionWarning, match="keyword foo=1.*keyword num_workers=3.*keyword chunksize=5"):
        ours = dask.compute(x, d, scheduler=param, foo=1, num_workers=3, chunksize=5)
    assert ours == dask.compute(x, d, scheduler="sync") == (sum(range(50)), 42)
    with pytest.warns(IgnoredOptionWarning, match="keyword foo=1.*keyword bar=None"):
        assert param({"x": 1, "y": (double, "x")}, "y", foo=1, bar=None) == 2

"""``dask.persist(..., scheduler=p)`` keeps the values in Redis: small graphs, nothing downloaded by the manager,
values read by the workers, released with the collection, or with the lease of a process that died."""

from __future__ import annotations

import gc
import inspect
import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator

import dask
import dask.array as da
import dask.base
import numpy as np
import pytest
import redis

from dask_redisparam import PersistedDownloadWarning, RedisParam, redis_get
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.manager.keeper import HOLD_TTL
from dask_redisparam.worker.server import EmbeddedRedis

from .conftest import wait_until


def _held(rclient: redis.Redis, jobname: str) -> list[bytes]:
    return sorted(rclient.scan_iter(match=keys.held(jobname, "*"), count=1000))


def _job_data_keys(rclient: redis.Redis, jobname: str) -> list[bytes]:
    """The job's keys that hold values (persisted ones, and any run's data or redo hash)."""
    found = rclient.scan_iter(match=keys.job_pattern(jobname), count=1000)
    return sorted(k for k in found if b":held:" in k or k.endswith(b":data") or b":redo:" in k)


class PeakRss:
    """The highest resident memory of this process (sampled every 2 ms) while the block runs, in bytes."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def param(redis_server: EmbeddedRedis) -> Iterator[RedisParam]:
    """Two local workers and their manager, shared by the tests of this module (on a job of their own)."""
    url = redis_server.address.to_url(show_password=True)
    with RedisParam(2, jobname="persist-" + secrets.token_hex(4), url=url) as p:
        yield p


@pytest.fixture
def jobname(param: RedisParam) -> str:
    return param.settings.jobname


def test_the_persist_protocol_is_dasks() -> None:
    assert "client.persist(collections, optimize_graph=optimize_graph, **kwargs)" in inspect.getsource(
        dask.base.persist
    )
    for method in (RedisParam.persist, redis_get.persist):  # type: ignore[attr-defined]
        params = list(inspect.signature(method).parameters)
        assert params[-3:] == ["collections", "optimize_graph", "kwargs"]


def test_persist_of_128_mb_keeps_it_in_redis(param: RedisParam, rclient: redis.Redis, jobname: str) -> None:
    x = da.random.RandomState(0).random((4000, 4000), chunks=(1000, 1000))  # 128 MB in 16 chunks
    assert x.npartitions == 16
    downloaded = param.backend.bytes_downloaded
    gc.collect()
    with PeakRss() as rss:
        started = time.perf_counter()
        (y,) = dask.persist(x, scheduler=param)
        persisted = time.perf_counter() - started
        started = time.perf_counter()
        total = y.sum().compute(scheduler=param)
        summed = time.perf_counter() - started
    graph = pickle.dumps(dict(y.__dask_graph__()))
    assert len(graph) < 1 << 20
    assert len(pickle.dumps(y)) < 1 << 20
    assert param.backend.bytes_downloaded - downloaded < 64 << 10  # the sum's scalar and the records, no chunk
    assert rss.growth < 0.1 * x.nbytes, rss.growth
    [held] = _held(rclient, jobname)
    assert rclient.hlen(held) > 16  # the 16 values, and the parts of these large values, moved with them
    started = time.perf_counter()
    expected = x.sum().compute(scheduler="threads")
    threads = time.perf_counter() - started
    assert total == expected  # the same chunks, summed in the same order
    print(f"\npersist {persisted:.2f} s, then sum {summed:.2f} s (threads: compute + sum {threads:.2f} s)")
    again = (y + 1)[:10, :10].compute(scheduler=param)
    np.testing.assert_array_equal(again, x[:10, :10].compute(scheduler="threads") + 1)


def test_released_when_the_collection_is_collected(param: RedisParam, rclient: redis.Redis, jobname: str) -> None:
    x = da.arange(4 * 2**18, chunks=2**18, dtype="float64")  # 4 values of 2 MB: parts
    (y,) = dask.persist(x, scheduler=param)
    z = y + 1  # built on the persisted values: they stay while it lives
    assert _held(rclient, jobname)
    del y
    gc.collect()
    time.sleep(0.3)
    assert _held(rclient, jobname)
    assert float(z.sum().compute(scheduler=param)) == float((x + 1).sum().compute(scheduler="sync"))
    del z
    gc.collect()
    assert wait_until(lambda: not _job_data_keys(rclient, jobname), 3.0), _job_data_keys(rclient, jobname)


def test_another_scheduler_downloads_with_one_warning(param: RedisParam) -> None:
    x = da.arange(1000, chunks=100)
    (y,) = dask.persist(x * 3, scheduler=param)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        total = y.sum().compute(scheduler="threads")
    assert total == 3 * sum(range(1000))
    assert [w.category for w in caught] == [PersistedDownloadWarning]
    assert "downloaded" in str(caught[0].message)
    assert list(y.compute(scheduler=param)) == [3 * i for i in range(1000)]


def test_persisted_values_survive_a_worker_crash(param: RedisParam, jobname: str) -> None:
    x = da.arange(2000, chunks=500)
    (y,) = dask.persist(x * 2, scheduler=param)
    records = param.backend.worker_records(jobname)
    for fields in records.values():  # every worker that computed (and caches) them
        os.kill(int(fields["pid"]), signal.SIGKILL)
    assert wait_until(lambda: not set(records) & set(param.worker_ids()), 15.0)  # reaped
    assert wait_until(lambda: len(param.worker_ids()) == 2, 30.0)  # their supervisor started new ones
    assert int(y.sum().compute(scheduler=param)) == 2 * sum(range(2000))


HOLDER_SCRIPT = """
import sys, time
import dask, dask.array as da
from dask_redisparam import RedisParam
from dask_redisparam.manager import keeper
keeper.HOLD_TTL, keeper.HOLD_RENEW = 1.0, 0.2
p = RedisParam(jobname=sys.argv[1], is_worker=False, url=sys.argv[2]).start()
(y,) = dask.persist(da.arange(100, chunks=50) + 1, scheduler=p)
print("persisted", flush=True)
time.sleep(600)
"""


def test_a_killed_process_loses_its_values_within_the_lease(
    param: RedisParam, redis_address: RedisAddress, rclient: redis.Redis, jobname: str
) -> None:
    url = redis_address.to_url(show_password=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, jobname, url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "persisted"
        [held] = _held(rclient, jobname)
        time.sleep(1.5)  # longer than the lease: renewed
        assert 0 < rclient.pttl(held) <= 1000
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        assert wait_until(lambda: not _held(rclient, jobname), 3.0)
        assert time.monotonic() - killed <= 1.5
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert HOLD_TTL <= 30.0  # the default lease: a crashed process's values go within half a minute


def test_stop_releases_and_an_unstarted_param_refuses(
    param: RedisParam, redis_address: RedisAddress, rclient: redis.Redis, jobname: str
) -> None:
    other = RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True))
    with pytest.raises(ValueError, match="start it first"):
        dask.persist(da.ones(4, chunks=2), scheduler=other)
    with other:  # served by the module's workers
        (y,) = dask.persist(da.ones(4, chunks=2) * 5, scheduler=other)
        assert _held(rclient, jobname)
    assert not _held(rclient, jobname)  # stop() released them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PersistedDownloadWarning)
        with pytest.raises(Exception, match="gone from Redis"):
            y.compute(scheduler="sync")

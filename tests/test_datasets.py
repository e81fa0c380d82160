"""Named datasets: published by one process, read exact by another after the first exited, freed by ``unpublish``,
listed by ``status``; published and persisted values survive a Redis restart with AOF and a worker crash."""

from __future__ import annotations

import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import dask
import dask.array as da
import pytest
import redis

from dask_redisparam import DatasetExists, DatasetNotFound, RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.worker.server import EmbeddedRedis

from .conftest import wait_until
from .test_cli_pool import run_cli


@pytest.fixture(scope="module")
def param(redis_server: EmbeddedRedis) -> Iterator[RedisParam]:
    """One local worker and its manager, shared by the tests of this module (on a job of their own)."""
    url = redis_server.address.to_url(show_password=True)
    with RedisParam(1, jobname="datasets-" + secrets.token_hex(4), url=url) as p:
        yield p


def _table() -> da.Array:
    return da.random.RandomState(1).random((1000, 1000), chunks=(250, 1000))  # 8 MB in 4 chunks


PUBLISHER = """
import sys
import dask.array as da
from dask_redisparam import RedisParam
with RedisParam(jobname=sys.argv[1], is_worker=False, url=sys.argv[2]) as p:
    p.publish("table", da.random.RandomState(1).random((1000, 1000), chunks=(250, 1000)))
    p.publish("settings", {"alpha": 0.5, "names": ["a", "b"]})
print("published", flush=True)
"""


def test_a_dataset_outlives_the_process_that_published_it(param: RedisParam, redis_server: EmbeddedRedis) -> None:
    url = redis_server.address.to_url(show_password=True)
    done = subprocess.run(
        [sys.executable, "-c", PUBLISHER, param.settings.jobname, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "published", done.stderr
    try:
        listed = param.datasets()
        assert sorted(listed) == ["settings", "table"]
        assert listed["table"].type == "dask.array.core.Array" and listed["table"].ttl is None
        assert 8_000_000 <= listed["table"].nbytes < 8_100_000
        assert 0 <= listed["table"].age < 60
        table = param.dataset("table")
        assert isinstance(table, da.Array) and table.shape == (1000, 1000)
        downloaded = param.backend.bytes_downloaded
        assert table.sum().compute(scheduler=param) == _table().sum().compute(scheduler="threads")
        assert param.backend.bytes_downloaded - downloaded < 64 << 10  # read in the worker
        assert param.dataset("settings") == {"alpha": 0.5, "names": ["a", "b"]}
        status = run_cli("dask-redisparam", "status", "--jobname", param.settings.jobname, "--interval", "0", url=url)
        assert status.returncode == 0, status.stderr
        assert "dataset table: dask.array.core.Array, 7.6 MiB" in status.stdout
        assert "dataset settings: builtins.dict" in status.stdout
    finally:
        for name in ("table", "settings"):
            param.unpublish(name)


def test_unpublish_frees_the_memory(param: RedisParam, rclient: redis.Redis) -> None:
    job = param.settings.jobname
    before = int(rclient.info("memory")["used_memory"])
    x = da.random.RandomState(2).random((2000, 2000), chunks=(500, 2000))  # 32 MB
    param.publish("big", x)
    with pytest.raises(DatasetExists, match="'big' is published on job"):
        param.publish("big", 1)
    published = int(rclient.info("memory")["used_memory"])
    assert published - before > 0.9 * x.nbytes
    assert rclient.pttl(keys.dataset_values(job, "big")) == -1  # until unpublished
    param.unpublish("big")

    def used() -> int:
        return int(rclient.info("memory")["used_memory"])

    # the clients' query buffers that took the large values shrink within a few of the server's cron cycles
    assert wait_until(lambda: used() < 1.1 * before, 5.0, interval=0.2), (before, published, used())
    assert not list(rclient.scan_iter(match=keys.job_pattern(job) + "dataset*"))
    with pytest.raises(DatasetNotFound, match="no dataset 'big'"):
        param.dataset("big")
    with pytest.raises(DatasetNotFound):
        param.unpublish("big")
    with pytest.raises(ValueError, match="dataset name"):
        param.publish("a:b*", 1)


def test_a_dataset_with_a_ttl_expires(param: RedisParam, rclient: redis.Redis) -> None:
    param.publish("brief", da.arange(10, chunks=5), ttl=1.0)
    assert 0 < param.datasets()["brief"].ttl <= 1.0  # type: ignore[operator]
    assert wait_until(lambda: "brief" not in param.datasets(), 3.0)
    assert not list(rclient.scan_iter(match=keys.job_pattern(param.settings.jobname) + "dataset*"))


def test_values_survive_a_redis_restart_with_aof_and_a_worker_crash(tmp_path: pathlib.Path) -> None:
    jobname = "aofdata-" + secrets.token_hex(4)
    x = da.random.RandomState(3).random((1000, 1000), chunks=(250, 1000))
    expected = x.sum().compute(scheduler="threads")
    with EmbeddedRedis(tcp=True, appendonly=True, dir=str(tmp_path)) as server:
        with RedisParam(1, jobname=jobname, url=server.url) as p:
            (y,) = dask.persist(x, scheduler=p)
            p.publish("kept", x * 2)
            server.kill()
            time.sleep(0.3)
            server.restart()
            assert y.sum().compute(scheduler=p) == expected
            assert p.dataset("kept").sum().compute(scheduler=p) == 2 * expected
            [worker] = p.backend.worker_records(jobname).values()
            os.kill(int(worker["pid"]), signal.SIGKILL)  # it computed, and cached, every value
            assert wait_until(lambda: p.worker_ids() and worker["pid"] not in _pids(p), 30.0)
            assert y.sum().compute(scheduler=p) == expected
            assert p.dataset("kept").sum().compute(scheduler=p) == 2 * expected
            p.unpublish("kept")


def _pids(p: RedisParam) -> set[str]:
    return {fields.get("pid", "") for fields in p.backend.worker_records(p.settings.jobname).values()}

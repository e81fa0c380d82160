"""``p.executor()``: a concurrent.futures Executor whose values stay in Redis (issue 15, done-when 3 and 4 for futures).

Real redis-server, real local workers (two, shared by the module's tests), real subprocess for the SIGKILL case.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import dask
import numpy as np
import pytest
import redis

from dask_redisparam import ExecutorClosed, RedisFuture, RedisParam, RemoteError
from dask_redisparam.backend import keys
from dask_redisparam.manager.lease import RUN_TTL
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks, tasks_futures
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def param(redis_server: EmbeddedRedis) -> Iterator[RedisParam]:
    """A param with two local workers on a job of this module."""
    url = redis_server.address.to_url(show_password=True)
    with RedisParam(2, jobname="t-ex-" + uuid.uuid4().hex[:8], url=url) as p:
        yield p


def data_keys(rclient: redis.Redis, jobname: str) -> list[bytes]:
    """The job's data hashes (every run's stored values)."""
    return [k for k in rclient.scan_iter(match=keys.runs_pattern(jobname), count=1000) if k.endswith(b":data")]


def stored_fields(rclient: redis.Redis, jobname: str) -> int:
    """How many values (and parts) the job's data hashes hold."""
    return sum(int(rclient.hlen(key)) for key in data_keys(rclient, jobname))


def test_futures_are_standard_and_values_stay_in_redis(param: RedisParam) -> None:
    with param.executor() as ex:
        assert isinstance(ex, cf.Executor)
        a = ex.submit(tasks.make_array, 4_000_000, 1.0)
        assert isinstance(a, cf.Future) and isinstance(a, RedisFuture)
        a.exception(timeout=30)  # done, value still in Redis
        before = param.backend.bytes_downloaded
        b = ex.submit(tasks_futures.total, {"x": [a, (a,)], "y": a})  # nested: read by the worker from Redis
        c = ex.submit(tasks.array_sum, a)
        assert b.result(timeout=30) == 3 * 500_000 and c.result(timeout=30) == 500_000
        assert param.backend.bytes_downloaded - before < 10_000  # two small results, never the 4 MB array
        assert b.result() == 1_500_000 and param.backend.bytes_downloaded - before < 10_000  # downloaded once
        assert a.result().nbytes == 4_000_000 and param.backend.bytes_downloaded - before > 4_000_000
        assert list(ex.map(abs, [-1, 2, -3])) == [1, 2, 3]


def test_as_completed_follows_completion_order(param: RedisParam) -> None:
    """1,000 submits: as_completed yields them in the order the workers finished them (their own clocks), not in
    submission order."""
    with param.executor() as ex:
        futures = [ex.submit(tasks_futures.stamp, 0, 1.0), ex.submit(tasks_futures.stamp, 1, 0.5)]
        futures += [ex.submit(tasks_futures.stamp, i) for i in range(2, 1000)]
        arrived = [f.result() for f in cf.as_completed(futures, timeout=60)]
    assert sorted(i for i, _ in arrived) == list(range(1000))
    order = [i for i, _ in arrived]
    assert order.index(1) < order.index(0) and order[0] != 0  # not submission order
    latest = 0.0
    for i, end in arrived:  # each arrives after every task that ended more than a batch's time before it
        assert end > latest - 0.3, (i, end, latest)
        latest = max(latest, end)


def test_cancel_withdraws_a_queued_task(param: RedisParam, tmp_path: object) -> None:
    on_manager, in_redis = (os.path.join(str(tmp_path), name) for name in ("on-manager", "in-redis"))
    with param.executor() as ex:
        busy = [ex.submit(tasks_futures.stamp, i, 0.5) for i in range(3)]
        queued = ex.submit(tasks.touch_then_slow_inc, in_redis, 1, 0)  # the window: 2 workers x 2 messages
        waiting = ex.submit(tasks.touch, on_manager, 1)  # no room in the window: ready on the manager
        # all pushed: two claimed by the workers, two in Redis's queue
        assert wait_until(lambda: ex._run is not None and len(ex._run.messages) == 4, 5)
        assert waiting.cancel() and waiting.cancelled() and waiting.done()
        assert queued.cancel() and queued.cancelled()  # taken back from Redis's queue
        with pytest.raises(cf.CancelledError):
            waiting.result()
        dependent = ex.submit(tasks.add, waiting, 1)  # a task on a cancelled future cannot run
        assert isinstance(dependent.exception(timeout=10), cf.CancelledError)
        cf.wait(busy, timeout=30)
        assert not busy[0].cancel()  # ran: too late
        assert [f.result()[0] for f in busy] == [0, 1, 2]
    assert not os.path.exists(on_manager) and not os.path.exists(in_redis)


def test_failure_has_the_original_type(param: RedisParam) -> None:
    with param.executor() as ex:
        bad = ex.submit(tasks.divide, 1, 0)
        after = ex.submit(tasks.add, bad, 1)  # fails with it
        error = bad.exception(timeout=30)
        assert isinstance(error, ZeroDivisionError) and isinstance(error, RemoteError) and error.key == bad.key
        with pytest.raises(ZeroDivisionError):
            bad.result()
        assert after.exception(timeout=30) is error
        assert ex.submit(tasks.add, 1, 1).result(timeout=30) == 2  # the executor goes on
    with pytest.raises(ExecutorClosed):
        ex.submit(tasks.add, 1, 1)


def test_asyncio_wrap_future(param: RedisParam) -> None:
    with param.executor() as ex:

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            first = asyncio.wrap_future(ex.submit(tasks.add, 1, 2))
            second = loop.run_in_executor(ex, tasks.add, 3, 4)
            return list(await asyncio.gather(first, second))

        assert asyncio.run(main()) == [3, 7]


def test_executor_as_dask_scheduler(param: RedisParam) -> None:
    import dask.array as da

    x = da.arange(1000, chunks=100)
    with param.executor() as ex:
        assert dask.base.get_scheduler(scheduler=ex) is ex  # callable: a get, not dask's local scheduler on submit
        (total,) = dask.compute(x.sum(), scheduler=ex)
        assert total == 499500
        assert ex._run is None or not ex._run.graph.nodes  # nothing went through submit
        (kept,) = dask.persist(x, scheduler=ex)  # the param's persist: the values stay in Redis
        assert not any(isinstance(v, np.ndarray) for v in dict(kept.__dask_graph__()).values())
        assert int(kept.sum().compute(scheduler=ex)) == 499500


def test_released_futures_leave_no_data(param: RedisParam, rclient: redis.Redis) -> None:
    job = param.settings.jobname
    with param.executor() as ex:
        futures = [ex.submit(tasks.make_array, 200_000, float(i)) for i in range(10)]
        cf.wait(futures, timeout=30)
        pending = ex.submit(tasks_futures.total, [futures[0], tasks_futures.stamp])  # still reads futures[0]
        assert data_keys(rclient, job)
        del futures
        gc.collect()
        assert wait_until(lambda: stored_fields(rclient, job) <= 2, 5)  # futures[0] and pending's value
        del pending
        gc.collect()
        assert wait_until(lambda: not data_keys(rclient, job), 5), stored_fields(rclient, job)
        held = ex.submit(tasks.add, 20, 22)
        cf.wait([held], timeout=30)
    assert held.result() == 42  # read at shutdown, before the run's keys went
    assert not list(rclient.scan_iter(match=keys.runs_pattern(job)))


KILLED_SCRIPT = """
import sys, time
from dask_redisparam import RedisParam
from tests import tasks
p = RedisParam(jobname=sys.argv[1], is_worker=False, url=sys.argv[2]).start()
ex = p.executor()
futures = [ex.submit(tasks.make_array, 100_000, 1.0) for _ in range(3)]
for f in futures:
    f.exception(timeout=60)
print("ready", flush=True)
time.sleep(60)
"""


def test_values_of_a_killed_process_expire_with_the_lease(param: RedisParam, rclient: redis.Redis) -> None:
    job = param.settings.jobname
    url = param.settings.address.to_url(show_password=True)  # type: ignore[union-attr]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, job, url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert data_keys(rclient, job)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not data_keys(rclient, job), RUN_TTL + 2)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()

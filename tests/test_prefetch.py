"""Prefetching workers (worker/prefetch.py): a message claimed ahead is never lost, never run twice.

A worker prefetches when a round trip is significant against a message's run time. On the test's Unix socket it is
not, so these tests make every round trip count (``PREFETCH_RATIO = 0``) in the worker they start; the manager keeps a
queue (``queue_multiplier``) so that there is something to prefetch.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker import prefetch
from dask_redisparam.worker.loop import Worker
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers, wait_until
from tests.test_faults import CountCompletions

pytestmark = pytest.mark.timeout(60)

EAGER_WORKER = """
import sys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker import prefetch
from dask_redisparam.worker.loop import Worker
prefetch.PREFETCH_RATIO = prefetch.MIN_ROUND_TRIP = 0.0  # every round trip counts: prefetch when the queue allows
Worker(RedisAddress.from_url(sys.argv[1]), sys.argv[2], heartbeat_interval=0.2, heartbeat_ttl=1.5).run()
"""


@pytest.fixture
def param(redis_address: RedisAddress, jobname: str) -> Iterator[RedisParam]:
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, queue_multiplier=6) as p:
        yield p


def _graph(n: int, seconds: float) -> dict[tuple[str, int], tuple[object, ...]]:
    return {("t", i): (tasks.slow_inc, i, seconds) for i in range(n)}


def test_policy_prefetches_only_for_significant_round_trips_and_a_queue() -> None:
    policy = prefetch.PrefetchPolicy()
    for _ in range(10):
        policy.round_trip(0.0002)
        policy.ran(0.1)
        policy.queued(50)
    assert policy.ahead() == 0  # loopback, 100 ms messages: a prefetched message would only lengthen the tail
    for _ in range(10):
        policy.round_trip(0.01)
    assert policy.ahead() == 0  # a few slow round trips (a busy machine) do not raise the estimate much
    for _ in range(200):
        policy.round_trip(0.01)
    assert policy.ahead() == 1  # the network got slower for good
    policy.queued(-1)
    assert policy.ahead() == 0  # fewer queued messages than workers: near the end, others may soon be idle


def test_a_killed_workers_prefetched_message_is_requeued_and_runs_once(
    param: RedisParam,
    redis_address: RedisAddress,
    jobname: str,
    tmp_path: Path,
    rclient: redis.Redis,
) -> None:
    marker = tmp_path / "fired"
    env = dict(os.environ, REDISPARAM_TEST_KILL_AT=f"prefetched:{marker}")
    url = redis_address.to_url(show_password=True)
    eager = subprocess.Popen([sys.executable, "-c", EAGER_WORKER, url, jobname], env=env)
    helper: CliWorkers | None = None
    try:
        wait_for_workers(redis_address, jobname, 1)
        dsk = _graph(40, 0.01)
        counter = CountCompletions()
        result: list[object] = []

        def compute() -> None:
            with counter:
                result.append(param(dsk, list(dsk)))

        thread = threading.Thread(target=compute)
        thread.start()
        assert wait_until(lambda: eager.poll() is not None, 20)  # it killed itself holding two messages
        assert marker.exists()
        helper = CliWorkers(redis_address, jobname, 1, "--heartbeat-interval", "0.2", "--heartbeat-ttl", "1.5")
        thread.join(40)
        assert not thread.is_alive()
        assert result == [tuple(range(1, 41))]
        assert set(counter.counts.values()) == {1} and len(counter.counts) == 40
        assert int(rclient.hget(keys.metrics(jobname), "lost") or 0) >= 2  # the running one and the prefetched one
    finally:
        if eager.poll() is None:
            eager.kill()
        eager.wait()
        if helper is not None:
            helper.stop()
            helper.log.close()


def test_a_warm_stop_gives_the_prefetched_message_back(
    param: RedisParam,
    redis_address: RedisAddress,
    jobname: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
) -> None:
    monkeypatch.setattr(prefetch, "PREFETCH_RATIO", 0.0)
    monkeypatch.setattr(prefetch, "MIN_ROUND_TRIP", 0.0)
    worker = Worker(redis_address, jobname, signer=None)
    served: list[int] = []
    runner = threading.Thread(target=lambda: served.append(worker.run()))
    runner.start()
    wait_for_workers(redis_address, jobname, 1)
    dsk = _graph(60, 0.02)
    counter = CountCompletions()
    result: list[object] = []

    def compute() -> None:
        with counter:
            result.append(param(dsk, list(dsk)))

    thread = threading.Thread(target=compute)
    with caplog.at_level(logging.INFO, logger="dask_redisparam.worker.loop"):
        thread.start()
        try:
            processing = keys.processing(jobname, worker.id)
            assert wait_until(lambda: rclient.llen(processing) >= 2, 20, interval=0.002)  # runs one, holds the next
            worker.request_stop()
            runner.join(20)
            assert not runner.is_alive()
        finally:
            worker.request_stop()
            runner.join(20)
    given_back = [r.getMessage() for r in caplog.records if "back on the queue" in r.getMessage()]
    assert given_back, "the prefetched message should go back to the queue"
    assert served and served[0] < 60  # it stopped early
    cli_workers(1)  # another worker runs the rest, the given-back message included
    thread.join(40)
    assert not thread.is_alive()
    assert result == [tuple(range(1, 61))]
    assert set(counter.counts.values()) == {1} and len(counter.counts) == 60


def test_lost_connections_while_replies_are_pending_lose_nothing(
    param: RedisParam,
    redis_address: RedisAddress,
    jobname: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prefetch, "PREFETCH_RATIO", 0.0)
    monkeypatch.setattr(prefetch, "MIN_ROUND_TRIP", 0.0)
    worker = Worker(redis_address, jobname, signer=None)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        wait_for_workers(redis_address, jobname, 1)
        dsk = _graph(80, 0.005)
        counter = CountCompletions()
        result: list[object] = []

        def compute() -> None:
            with counter:
                result.append(param(dsk, list(dsk)))

        thread = threading.Thread(target=compute)
        thread.start()
        cut = 0
        while thread.is_alive() and cut < 20:  # drop the worker's connections, replies in flight included
            backend = worker._backend
            if backend is not None and worker._pending is not None:
                backend._r.connection_pool.disconnect()
                cut += 1
            thread.join(0.01)
        thread.join(40)
        assert not thread.is_alive()
        assert cut > 0
        assert result == [tuple(range(1, 81))]
        assert set(counter.counts.values()) == {1} and len(counter.counts) == 80
    finally:
        worker.request_stop()
        runner.join(20)

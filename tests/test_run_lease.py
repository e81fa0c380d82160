"""The run's lease: a run whose manager is gone stops being served within seconds; a busy manager keeps its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from dask.callbacks import Callback

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend, keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.errors import RunLost
from dask_redisparam.manager.lease import RUN_TTL, RunLease
from dask_redisparam.wire.bulk import Report
from tests import tasks
from tests.conftest import CliWorkers

TASK_SECONDS = 0.2

MANAGER_SCRIPT = """
import sys
from dask_redisparam import RedisParam
from tests import tasks
jobname, url, path, n, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
# a window of 200 messages: most of them wait in the queue when the manager dies
with RedisParam(jobname=jobname, is_worker=False, url=url, queue_multiplier=100, redo_ttl=600, resume_ttl=600) as p:
    print("started", flush=True)
    p({("s", i): (tasks.counted_slow_inc, path, i, seconds) for i in range(n)}, [("s", i) for i in range(n)])
"""


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_workers_stop_serving_a_run_within_seconds_of_its_managers_death(
    redis_address: RedisAddress,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    cli_workers(2)
    count = tmp_path / "executions"
    url = redis_address.to_url(show_password=True)
    argv = [sys.executable, "-c", MANAGER_SCRIPT, jobname, url, str(count), "300", str(TASK_SECONDS)]
    manager = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert manager.stdout is not None and manager.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while _lines(count) < 6:  # the run is under way
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(manager.pid, signal.SIGKILL)
    killed = time.monotonic()
    manager.wait()
    manager.stdout.close()
    (run_id,) = {keys.run_id_of(k.decode()) for k in rclient.scan_iter(match=keys.runs_pattern(jobname))}
    assert run_id is not None
    assert rclient.llen(keys.queue(jobname)) > 50  # today's workers would run these for up to 30 s
    seen, last_growth = _lines(count), killed
    while time.monotonic() < killed + RUN_TTL + 5:
        time.sleep(0.05)
        if (now := _lines(count)) != seen:
            seen, last_growth = now, time.monotonic()
    # the lease lapses RUN_TTL s after the last renewal; a message loaded just before runs to its end
    print(f"last execution {last_growth - killed:.2f} s after the manager died")
    assert last_growth - killed < RUN_TTL + TASK_SECONDS + 1.0, (last_growth - killed, seen)
    assert rclient.llen(keys.queue(jobname)) == 0  # the workers dropped the rest as they claimed them, unrun
    assert not rclient.exists(keys.alive(jobname, run_id), keys.done(jobname, run_id))
    worker_ids = [w.decode() for w in rclient.smembers(keys.workers(jobname))]
    workers = {keys.workers(jobname), *(keys.worker(jobname, w) for w in worker_ids)}
    left = {k.decode() for k in rclient.scan_iter(match=keys.job_pattern(jobname))} - workers
    data = keys.data(jobname, run_id)
    # only the run's values and its entry in the registry of runs, with their own TTL (600 s) for a later resume
    assert left == {data, keys.runs(jobname)}
    assert 540_000 < rclient.pttl(data) <= 600_000
    assert 540_000 < rclient.pttl(keys.runs(jobname)) <= 600_000
    rclient.delete(data, keys.runs(jobname))


def test_a_manager_blocked_for_ten_seconds_keeps_its_run(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], tmp_path: Path
) -> None:
    """The lease (and the completion records waiting for the manager) are renewed by a thread of their own."""
    cli_workers(2)
    count = tmp_path / "executions"
    blocked: list[Any] = []

    def block_once(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if not blocked:  # while other tasks are in flight: their records wait for 10 s
            blocked.append(key)
            time.sleep(10)

    dsk = {("t", i): (tasks.counted_slow_inc, str(count), i, 0.05) for i in range(40)}
    with Callback(posttask=block_once):
        assert manager(dsk, list(dsk)) == tuple(range(1, 41))
    assert blocked
    executions = Counter(count.read_text().split())
    assert len(executions) == 40 and set(executions.values()) == {1}


def test_a_run_whose_lease_vanished_fails_with_run_lost_and_stays_gone(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis, jobname: str
) -> None:
    cli_workers(1)

    def drop_lease() -> None:
        for key in rclient.scan_iter(match=keys.runs_pattern(jobname)):
            if key.endswith(b":alive"):
                rclient.delete(key)

    timer = threading.Timer(1.0, drop_lease)
    timer.start()
    try:
        with pytest.raises(RunLost, match="lost the state of run"):
            manager({("s", i): (tasks.sleep_leaf, i, 0.1) for i in range(100)}, [("s", i) for i in range(100)])
    finally:
        timer.join()
    time.sleep(2 * RUN_TTL / 4)  # a renewal would have re-created it by now
    assert not [k for k in rclient.scan_iter(match=keys.runs_pattern(jobname)) if k.endswith(b":alive")]


def test_values_outlive_the_lease_with_their_own_ttl(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis
) -> None:
    """A completion keeps the data hash's TTL (redo_ttl); ``alive`` and ``done`` go with the lease."""
    backend = Backend.connect(redis_address)
    try:
        backend.open_run(jobname, "r1", 1.0, {"1": b"literal"}, keep=600)
        message = b"D1|r1|0|0|||payload"
        rclient.lpush(keys.queue(jobname), message)
        assert backend.claim(jobname, "w1", 1.0) == message
        assert backend.complete(Report(jobname, "w1", "r1", message, b"record", [("2", b"result")], 1)) == 1
        data, done, alive = keys.data(jobname, "r1"), keys.done(jobname, "r1"), keys.alive(jobname, "r1")
        assert 590_000 < rclient.pttl(data) <= 600_000  # not cut down to what is left of the lease
        assert 0 < rclient.pttl(done) <= 1000
        time.sleep(1.3)
        assert not rclient.exists(alive, done)
        assert sorted(rclient.hkeys(data)) == [b"1", b"2"]
        assert not backend.renew_run(jobname, "r1", 1.0, 600)  # finds the lease gone, and creates nothing
        assert not rclient.exists(alive, done)
        rclient.delete(data)
        # redo_ttl=0: the values go with the lease; the thread renews all three with its own connection
        backend.open_run(jobname, "r2", 1.0, {"1": b"literal"}, keep=0)
        lease = RunLease(redis_address, jobname, "r2", keep=0, ttl=1.0, interval=0.2).start()
        try:
            time.sleep(1.5)
            lease.check()
            assert rclient.exists(keys.alive(jobname, "r2"), keys.data(jobname, "r2")) == 2
            assert rclient.pttl(keys.data(jobname, "r2")) <= 1000
        finally:
            lease.stop()
        time.sleep(1.3)
        assert not list(rclient.scan_iter(match=keys.runs_pattern(jobname)))
    finally:
        backend.close()

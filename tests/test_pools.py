"""Worker pools: RedisParam's end-to-end tests (R's test_RedisParam-class.R) and the pool life cycle."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dask_redisparam import (
    KilledWorker,
    RedisParam,
    WorkerConflict,
    bpstopall,
    rpalive,
    rphost,
    rpisworker,
    rppassword,
    rpport,
    rpstopall,
    rpworkers,
)
from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker.loop import Worker
from tests import tasks
from tests.conftest import CliWorkers, left_keys, wait_for_workers, wait_until


def job_keys(rclient: redis.Redis, jobname: str) -> list[bytes]:
    return left_keys(rclient, jobname)


def live(address: RedisAddress, jobname: str) -> list[str]:
    backend = Backend.connect(address)
    try:
        return backend.live_workers(jobname)
    finally:
        backend.close()


@pytest.fixture
def url(redis_address: RedisAddress) -> str:
    return redis_address.to_url(show_password=True)


def test_stop_all_workers(url: str, jobname: str, redis_address: RedisAddress) -> None:
    with RedisParam(2, jobname=jobname, url=url) as param:
        assert len(param.worker_ids()) == 2
        assert rpstopall(param) == 2
        assert live(redis_address, jobname) == []
    assert live(redis_address, jobname) == []


def test_stop_all_touches_only_its_own_jobname(url: str, jobname: str, redis_address: RedisAddress) -> None:
    with RedisParam(2, jobname=jobname, url=url) as p1:
        other = RedisParam(jobname=jobname + "-other", is_worker=False, url=url)
        other.stop()
        assert other.stop_all() == 0
        assert len(live(redis_address, jobname)) == 2
        same_job = RedisParam(jobname=jobname, is_worker=False, url=url)
        same_job.start()
        same_job.stop()  # a manager-only param has no workers of its own to stop
        assert len(live(redis_address, jobname)) == 2
        assert same_job.stop_all() == 2  # works unstarted, through a temporary connection
        assert live(redis_address, jobname) == []
        assert p1.is_up


def test_long_running_job_uses_exactly_the_two_workers(url: str, jobname: str) -> None:
    with RedisParam(2, jobname=jobname, url=url) as param:
        pids = param({("s", i): (tasks.sleep_then_pid, 1.0, i) for i in range(4)}, [("s", i) for i in range(4)])
    assert len(pids) == 4 and len(set(pids)) == 2


def test_start_compute_stop_ten_times_leaves_no_key(url: str, jobname: str, rclient: redis.Redis) -> None:
    for i in range(10):
        with RedisParam(1, jobname=jobname, url=url) as param:
            assert param({"x": (tasks.inc, i)}, "x") == i + 1
    assert job_keys(rclient, jobname) == []


def test_a_thousand_elements_come_back_in_order(manager: RedisParam, cli_workers: Callable[..., CliWorkers]) -> None:
    cli_workers(2)
    keys_ = [("e", i) for i in range(1000)]
    assert manager({k: (tasks.noop, k[1]) for k in keys_}, keys_) == tuple(range(1000))


def test_more_tasks_than_workers(manager: RedisParam, cli_workers: Callable[..., CliWorkers]) -> None:
    cli_workers(2)
    assert manager({("t", i): (tasks.inc, i) for i in range(3)}, [("t", i) for i in range(3)]) == (1, 2, 3)


def test_a_worker_that_dies_mid_run_has_its_task_run_elsewhere(url: str, jobname: str) -> None:
    with RedisParam(2, jobname=jobname, url=url) as param:
        pids = param({("p", i): (tasks.sleep_then_pid, 0.3, i) for i in range(2)}, [("p", 0), ("p", 1)])
        assert len(set(pids)) == 2
        victim = pids[0]
        dsk = {("q", i): (tasks.exit_if_pid, victim, i) for i in range(8)}
        result = param(dsk, list(dsk))
        assert victim not in result and len(result) == 8
        # the supervisor replaced the dead worker (its replacement registers within a few seconds)
        assert wait_until(lambda: len(param.worker_ids()) == 2, 15), param.worker_ids()


def test_workers_joining_mid_compute_take_tasks_at_once(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], redis_address: RedisAddress, jobname: str
) -> None:
    cli_workers(1)
    late: list[CliWorkers] = []
    timer = threading.Timer(1.0, lambda: late.append(CliWorkers(redis_address, jobname, 2)))
    dsk = {("s", i): (tasks.sleep_then_pid, 0.05, i) for i in range(200)}
    try:
        timer.start()
        started = time.monotonic()
        pids = manager(dsk, list(dsk))
        elapsed = time.monotonic() - started
    finally:
        timer.join()
        for w in late:
            w.stop()
            w.log.close()
    assert len(set(pids)) == 3
    assert elapsed < 0.8 * 200 * 0.05, elapsed  # one worker alone needs 10 s


def test_warm_stop_finishes_the_running_task(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], redis_address: RedisAddress, jobname: str
) -> None:
    workers = cli_workers(1)
    result: list[Any] = []
    compute = threading.Thread(target=lambda: result.append(manager({"t": (tasks.sleep_then_pid, 2.0)}, "t")))
    compute.start()
    assert wait_until(lambda: busy_worker(redis_address, jobname) is not None, 10)
    workers.process.send_signal(signal.SIGTERM)
    compute.join(30)
    assert workers.process.wait(10) == 0
    assert len(result) == 1 and isinstance(result[0], int)


def busy_worker(address: RedisAddress, jobname: str) -> str | None:
    backend = Backend.connect(address)
    try:
        records = backend.worker_records(jobname)
    finally:
        backend.close()
    return next((wid for wid, f in records.items() if f.get("current")), None)


def test_cold_stop_requeues_the_running_task(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], redis_address: RedisAddress, jobname: str
) -> None:
    first = cli_workers(1)
    result: list[Any] = []
    compute = threading.Thread(target=lambda: result.append(manager({"t": (tasks.sleep_then_pid, 3.0)}, "t")))
    compute.start()
    assert wait_until(lambda: busy_worker(redis_address, jobname) is not None, 10)
    second = cli_workers(1, wait=False)
    wait_for_workers(redis_address, jobname, 2)
    first.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(10) == 0
    compute.join(30)
    assert len(result) == 1
    assert result[0] in {c.pid for c in __import__("psutil").Process(second.process.pid).children()}


def test_two_managers_share_one_pool(url: str, jobname: str, cli_workers: Callable[..., CliWorkers]) -> None:
    cli_workers(2)
    results: dict[str, Any] = {}

    def run(name: str, offset: int) -> None:
        with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
            dsk = {(name, i): (tasks.slow_inc, offset + i, 0.01) for i in range(100)}
            results[name] = param(dsk, list(dsk))

    threads = [threading.Thread(target=run, args=(n, o)) for n, o in (("m1", 0), ("m2", 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["m1"] == tuple(range(1, 101))
    assert results["m2"] == tuple(range(1001, 1101))


def test_duplicate_worker_id_is_refused(redis_address: RedisAddress, jobname: str) -> None:
    first = Worker(redis_address, jobname, "same-id")
    thread = threading.Thread(target=first.run)
    thread.start()
    try:
        wait_for_workers(redis_address, jobname, 1)
        with pytest.raises(WorkerConflict, match="same-id"):
            Worker(redis_address, jobname, "same-id").run()
    finally:
        first.request_stop()
        thread.join(10)


def test_worker_id_from_environment(redis_address: RedisAddress, jobname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDISPARAM_ID", "from-env")
    assert Worker(redis_address, jobname).id == "from-env"


def test_alive(url: str, redis_address: RedisAddress, caplog: pytest.LogCaptureFixture) -> None:
    assert rpalive(RedisParam(url=url, is_worker=False))
    started = time.monotonic()
    assert not RedisParam(host="127.0.0.1", port=1, is_worker=False).alive()
    assert not RedisParam(is_worker=False, environ={}).alive()  # no server configured, none started
    assert time.monotonic() - started < 3


def test_wrong_password_is_not_alive_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    from dask_redisparam import EmbeddedRedis

    with EmbeddedRedis(tcp=True) as server:
        good = server.address
        assert RedisParam(host="127.0.0.1", port=good.port, password=good.password, is_worker=False).alive()
        with caplog.at_level("WARNING", logger="dask_redisparam"):
            started = time.monotonic()
            assert not RedisParam(host="127.0.0.1", port=good.port, password="wrong-pw", is_worker=False).alive()
            assert time.monotonic() - started < 2
        assert any("refused" in r.getMessage() for r in caplog.records)
        assert all("wrong-pw" not in r.getMessage() for r in caplog.records)


def test_r_names(url: str, redis_address: RedisAddress) -> None:
    assert rpworkers(False) == 1000 and rpworkers(True) == 1 and rpworkers(None) >= 1
    tcp = RedisParam(host="db.example", port=6380, password="pw", is_worker=False)
    assert (rphost(tcp), rpport(tcp), rppassword(tcp), rpisworker(tcp)) == ("db.example", 6380, "pw", False)
    assert rphost(RedisParam(is_worker=None, environ={})) is None
    param = RedisParam(url=url, is_worker=False, jobname="r-names")
    with pytest.warns(DeprecationWarning, match="rpstopall"):
        assert bpstopall(param) == 0


def test_stop_all_from_a_worker_param_is_an_error(url: str) -> None:
    with pytest.raises(Exception, match="from a manager"):
        RedisParam(url=url, is_worker=True, jobname="w").stop_all()


def test_worker_mode_serves_in_the_foreground(url: str, jobname: str, redis_address: RedisAddress) -> None:
    param = RedisParam(2, jobname=jobname, url=url, is_worker=True)
    thread = threading.Thread(target=param.start)
    thread.start()
    try:
        wait_for_workers(redis_address, jobname, 2)  # itself, plus workers - 1 extra
        with RedisParam(jobname=jobname, is_worker=False, url=url) as manager:
            pids = manager({("p", i): (tasks.sleep_then_pid, 0.1, i) for i in range(6)}, [("p", i) for i in range(6)])
            assert os.getpid() in pids  # the foreground worker is this process
            assert manager.stop_all() == 2
    finally:
        thread.join(20)
    assert not thread.is_alive()
    assert live(redis_address, jobname) == []


def test_a_task_that_kills_every_worker_fails_with_killed_worker(url: str, jobname: str) -> None:
    with RedisParam(2, jobname=jobname, url=url, allowed_failures=1) as param:
        with pytest.raises(KilledWorker, match=r"task 'doomed'.*2 worker\(s\).*allowed_failures=1") as info:
            param({"doomed": (tasks.always_exit,)}, "doomed")
        assert info.value.attempts == 2
        assert param({"x": (tasks.inc, 1)}, "x") == 2

"""RedisParam's life cycle (start/stop/is_up), the embedded default, redis_get's process-wide param."""

from __future__ import annotations

import logging
import os
import threading
import time

import dask.config
import psutil
import pytest
import redis

import dask_redisparam
from dask_redisparam import ConfigurationError, IgnoredOptionWarning, RedisParam, redis_get
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.manager import loop as manager_module
from tests import tasks
from tests.conftest import CliWorkers, left_keys


def child_processes() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def test_start_stop_is_up_and_worker_ids(redis_address: RedisAddress, jobname: str, rclient: redis.Redis) -> None:
    before = child_processes()
    param = RedisParam(2, jobname=jobname, url=redis_address.to_url(show_password=True))
    assert not param.is_up
    with param:
        assert param.is_up
        assert len(param.worker_ids()) == 2
        assert param({"x": (tasks.inc, 1)}, "x") == 2
        assert len(child_processes() - before) >= 3  # the supervisor and its two workers
    assert not param.is_up
    assert child_processes() - before == set()
    assert left_keys(rclient, jobname) == []


def test_unstarted_param_starts_and_stops_around_one_compute(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis
) -> None:
    param = RedisParam(1, jobname=jobname, url=redis_address.to_url(show_password=True))
    assert param({"x": (tasks.inc, 1), "y": (tasks.add, "x", 10)}, ["y", "x"]) == (12, 2)
    assert not param.is_up
    assert left_keys(rclient, jobname) == []


def test_embedded_default_server_starts_and_stops_with_the_param() -> None:
    param = RedisParam(1)
    assert param.address is None
    with param:
        socket_path = param.backend.address.path
        assert socket_path is not None and os.path.exists(socket_path)
        assert oct(os.stat(os.path.dirname(socket_path)).st_mode & 0o777) == "0o700"
        assert param({"x": (tasks.getpid,)}, "x") != os.getpid()
    assert not os.path.exists(socket_path)


def test_redis_get_keeps_its_pool_across_computes() -> None:
    try:
        assert redis_get({"x": (tasks.inc, 1)}, "x") == 2
        first = dask_redisparam.param.default_param()
        ids = first.worker_ids()
        assert redis_get({"x": (tasks.inc, 2)}, ["x"]) == (3,)
        assert dask_redisparam.param.default_param() is first
        assert first.worker_ids() == ids
    finally:
        dask_redisparam.shutdown()
    assert not first.is_up


def test_repr_masks_the_password() -> None:
    param = RedisParam(host="db.example", password="hunter2-secret", is_worker=False)
    assert "hunter2-secret" not in repr(param)
    assert "*****" in repr(param) and "state='down'" in repr(param)


def test_settings_are_read_only_attributes() -> None:
    param = RedisParam(3, jobname="j1", queue_multiplier=4)
    assert (param.workers, param.jobname, param.queue_multiplier) == (3, "j1", 4.0)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        param.nonsense  # noqa: B018


def test_invalid_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="queue_multiplier"):
        RedisParam(queue_multiplier=0)


def test_worker_mode_needs_a_shared_server_and_cannot_compute() -> None:
    with pytest.raises(ConfigurationError, match="needs a Redis server that others can reach"):
        RedisParam(is_worker=True, jobname="j2", environ={}).start()
    with pytest.raises(ConfigurationError, match="cannot run computations"):
        RedisParam(is_worker=True, jobname="j2", host="127.0.0.1")({"x": 1}, "x")


def test_literals_need_no_worker(manager: RedisParam) -> None:
    assert manager({"x": 1, "y": "x"}, ["x", "y"]) == (1, 1)


def test_unknown_kwargs_are_ignored_with_a_warning(manager: RedisParam, cli_workers: object) -> None:
    cli_workers(1)  # type: ignore[operator]
    with pytest.warns(IgnoredOptionWarning, match="keyword num_workers=7.*keyword foo='bar'"):
        assert manager({"x": (tasks.inc, 1)}, "x", num_workers=7, foo="bar") == 2


def test_manager_waits_for_a_worker_and_says_so(
    manager: RedisParam,
    redis_address: RedisAddress,
    jobname: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manager_module, "WAIT_WARNING", 0.2)
    workers: list[CliWorkers] = []
    timer = threading.Timer(1.0, lambda: workers.append(CliWorkers(redis_address, jobname, 1)))
    timer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="dask_redisparam"):
            started = time.monotonic()
            assert manager({"x": (tasks.inc, 1)}, "x") == 2
        assert time.monotonic() - started >= 1.0
        warnings = [r.getMessage() for r in caplog.records if "no live worker" in r.getMessage()]
        assert warnings and jobname in warnings[0] and redis_address.describe() in warnings[0]
    finally:
        timer.join()
        for w in workers:
            w.stop()
            w.log.close()


def test_unreachable_server_fails_fast_naming_it() -> None:
    started = time.monotonic()
    with pytest.raises(dask_redisparam.ServerUnavailable, match="127.0.0.1:1"):
        RedisParam(host="127.0.0.1", port=1, is_worker=False).start()
    assert time.monotonic() - started < 5


def test_a_compute_fails_clearly_when_the_local_workers_are_gone(redis_address: RedisAddress, jobname: str) -> None:
    with RedisParam(1, jobname=jobname, url=redis_address.to_url(show_password=True), heartbeat_ttl=2) as param:
        assert param._local is not None
        param._local.process.kill()  # the supervisor; its worker follows (parent-death signal)
        param._local.process.wait()
        started = time.monotonic()
        with pytest.raises(dask_redisparam.WorkerError, match="local workers of job .* exited"):
            param({"x": (tasks.inc, 1)}, "x")
        assert time.monotonic() - started < 15


def test_start_timeout_bounds_the_wait_for_local_workers(redis_address: RedisAddress, jobname: str) -> None:
    """``start_timeout``: how long start() waits for its local workers (they take far more than 1 ms to start)."""
    url = redis_address.to_url(show_password=True)
    with pytest.raises(ConfigurationError, match=r"^start_timeout=0 must be a number > 0$"):
        RedisParam(1, jobname=jobname, url=url, start_timeout=0)
    before = child_processes()
    param = RedisParam(1, jobname=jobname, url=url, start_timeout=0.001)
    with pytest.raises(dask_redisparam.WorkerError, match=rf"^no local worker of job '{jobname}' started in 0.001 s$"):
        param.start()
    assert not param.is_up and child_processes() - before == set()
    with dask.config.set({"redisparam.start_timeout": 30}), RedisParam(1, jobname=jobname, url=url) as param:
        assert param.start_timeout == 30.0 and len(param.worker_ids()) == 1

"""Redis full (``maxmemory`` with ``noeviction``, the policy the docs recommend): results or uploads that do not fit
fail the run at once with a ``ServerOutOfMemory`` naming the server, the run keeps nothing for ``redo=`` (a later
compute that fits works), and the workers neither crash nor lose the message: they report it, or wait for memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dask_redisparam import RedisParam, ServerOutOfMemory
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers, left_keys, wait_for_workers

BIG = 30_000_000
"""Bytes of a result that cannot fit (the server gets this much less room)."""


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(extra_args=["--maxmemory-policy", "noeviction"]) as server:
        yield server


@pytest.fixture
def admin(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(unix_socket_path=server.socket_path, password=server.address.password)
    try:
        yield client
    finally:
        client.config_set("maxmemory", 0)
        client.close()


@pytest.fixture
def workers(server: EmbeddedRedis, jobname: str) -> Iterator[CliWorkers]:
    started = CliWorkers(server.address, jobname, 2)
    try:
        wait_for_workers(server.address, jobname, 2)
        yield started
    finally:
        started.stop()
        started.log.close()


def _limit(admin: redis.Redis, room: int) -> None:
    """Let the server hold ``room`` more bytes than it holds now."""
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + room)


def _job_keys(admin: redis.Redis, jobname: str) -> list[str]:
    return sorted(k.decode() for k in left_keys(admin, jobname))


def _check_failure(error: BaseException, server: EmbeddedRedis) -> None:
    message = str(error)
    assert f"Redis at {server.address.describe()} is out of memory" in message, message
    assert "maxmemory" in message and "nothing of it is kept for redo=" in message, message
    assert "evicted" not in message and "restarted" not in message, message  # not the RunLost of old


@pytest.mark.parametrize("stop_on_error", [True, False])
def test_a_result_that_does_not_fit(
    server: EmbeddedRedis, admin: redis.Redis, workers: CliWorkers, jobname: str, stop_on_error: bool
) -> None:
    with RedisParam(jobname=jobname, is_worker=False, url=server.url, stop_on_error=stop_on_error) as param:
        _limit(admin, 8_000_000)
        dsk: dict[Any, Any] = {"big": (tasks.huge_bytes, BIG), "one": (tasks.inc, 1)}
        started = time.monotonic()
        with pytest.raises(ServerOutOfMemory) as info:
            param(dsk, ["big", "one"])
        assert time.monotonic() - started < 15.0
        _check_failure(info.value, server)
        assert info.value.__class__ is ServerOutOfMemory  # the manager's own error, not a task's
        names = _job_keys(admin, jobname)
        assert not [k for k in names if ":redo:" in k or ":run:" in k], names  # nothing kept, nothing left
        # a compute that fits works on the same server, with the same workers
        assert param.map(tasks.inc, range(20)) == list(range(1, 21))
    assert workers.process.poll() is None and len(wait_for_workers(server.address, jobname, 2)) == 2
    assert workers.stop() == 0
    log = workers.stderr()
    assert "could not store the results of message" in log and "is out of memory" in log, log
    assert "Traceback" not in log and "died" not in log, log


def test_an_upload_that_does_not_fit(
    server: EmbeddedRedis, admin: redis.Redis, workers: CliWorkers, jobname: str
) -> None:
    with RedisParam(jobname=jobname, is_worker=False, url=server.url) as param:
        _limit(admin, 8_000_000)
        with pytest.raises(ServerOutOfMemory) as info:
            param({"data": b"x" * BIG, "n": (len, "data")}, "n")  # the literal is uploaded by the manager
        _check_failure(info.value, server)
        assert not [k for k in _job_keys(admin, jobname) if ":redo:" in k or ":run:" in k]
        assert param({"data": b"x" * 100_000, "n": (len, "data")}, "n") == 100_000


def test_workers_wait_while_the_server_is_full(
    server: EmbeddedRedis, admin: redis.Redis, workers: CliWorkers, jobname: str
) -> None:
    with RedisParam(jobname=jobname, is_worker=False, url=server.url) as param:
        admin.config_set("maxmemory", 1)  # full: every write that may grow the memory is refused
        started = time.monotonic()
        with pytest.raises(ServerOutOfMemory) as info:
            param.map(tasks.inc, range(5))
        assert time.monotonic() - started < 5.0
        _check_failure(info.value, server)
        time.sleep(2.5)  # the idle workers' claims are refused meanwhile: they wait, they do not exit
        assert workers.process.poll() is None
        admin.config_set("maxmemory", 0)  # what the message says to do
        assert param.map(tasks.inc, range(5)) == [1, 2, 3, 4, 5]
    assert workers.stop() == 0
    log = workers.stderr()
    assert "is out of memory and refused a write" in log and "; waiting" in log, log
    assert log.count("; waiting") <= 4, log  # one warning per worker per 10 s, not one per attempt
    assert "Traceback" not in log, log

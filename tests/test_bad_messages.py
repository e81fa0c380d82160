"""One bad queue entry never takes the pool down: it is dead-lettered (never unpickled) and the workers go on.

Real worker daemons (``dask-redisparam-worker``, its supervisor included) on a real redis-server: a stray ``LPUSH``
of garbage, of a message of another protocol version, or of a validly signed message to workers that have no
secret, ends in the job's dead-letter list; the same worker processes (same pids) serve the next compute, and
``dask-redisparam status`` shows the dead-letter count and the last rejection.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend, keys
from dask_redisparam.cli import main
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.wire.protocol import encode_task
from dask_redisparam.wire.signing import Signer
from tests import tasks
from tests.conftest import CliWorkers

SECRET = "a-shared-secret-of-sufficient-length"


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers and manager of these tests have no secret (unsigned job) unless a test sets one."""
    monkeypatch.delenv("REDISPARAM_SECRET", raising=False)
    monkeypatch.delenv("REDISPARAM_SECRET_FILE", raising=False)


def worker_pids(address: RedisAddress, jobname: str) -> dict[str, str]:
    backend = Backend.connect(address)
    try:
        return {wid: fields["pid"] for wid, fields in backend.worker_records(jobname).items()}
    finally:
        backend.close()


def wait_dead_letters(rclient: redis.Redis, jobname: str, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while rclient.llen(keys.dead(jobname)) < n:
        assert time.monotonic() < deadline, f"only {rclient.llen(keys.dead(jobname))} of {n} entries dead-lettered"
        time.sleep(0.05)


def status_output(address: RedisAddress, jobname: str) -> str:
    url = address.to_url(show_password=True)
    result = CliRunner().invoke(main, ["status", "--jobname", jobname, "--url", url, "--rate-window", "0"])
    assert result.exit_code == 0, result.output
    return result.output


def test_garbage_and_another_protocol_version_are_dead_lettered_and_the_pool_keeps_serving(
    redis_address: RedisAddress,
    jobname: str,
    rclient: redis.Redis,
    cli_workers: Callable[..., CliWorkers],
    manager: RedisParam,
) -> None:
    workers = cli_workers(2)
    before = worker_pids(redis_address, jobname)
    assert len(before) == 2
    garbage = b"\x80\x04garbage that is no task message"
    other_version = b"D1|0123456789ab|0|0|||" + b"x" * 20
    rclient.lpush(keys.queue(jobname), garbage, other_version)
    wait_dead_letters(rclient, jobname, 2)
    time.sleep(1.0)  # a worker that exits would be gone (and replaced) by now
    assert workers.process.poll() is None  # the supervisor still runs
    assert worker_pids(redis_address, jobname) == before  # the same worker processes, none restarted
    assert sorted(rclient.lrange(keys.dead(jobname), 0, -1)) == sorted([garbage, other_version])
    assert rclient.llen(keys.queue(jobname)) == 0
    n = 12
    assert manager({("t", i): (tasks.inc, i) for i in range(n)}, [("t", i) for i in range(n)]) == tuple(range(1, n + 1))
    assert worker_pids(redis_address, jobname) == before
    out = status_output(redis_address, jobname)
    assert "dead-lettered messages: 2" in out
    last = next(line for line in out.splitlines() if line.startswith("last rejection: "))
    assert "not a task message" in last or "another protocol version" in last
    assert "2 in all" in last
    workers.stop()
    log = workers.stderr()
    assert log.count("rejected a task message (not unpickled; dead-lettered)") == 2
    assert "giving up" not in log and "died" not in log


def test_a_worker_without_a_secret_does_not_crash_loop_on_a_signed_message(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis, cli_workers: Callable[..., CliWorkers]
) -> None:
    workers = cli_workers(2)
    before = worker_pids(redis_address, jobname)
    signed = [encode_task("0123456789ab", i, 0, b"payload", Signer.from_secret(SECRET), jobname) for i in range(3)]
    rclient.lpush(keys.queue(jobname), *signed)
    wait_dead_letters(rclient, jobname, 3)
    time.sleep(2.0)  # today's supervisor gives up after a few restarts within this time
    assert workers.process.poll() is None
    assert worker_pids(redis_address, jobname) == before
    assert sorted(rclient.lrange(keys.dead(jobname), 0, -1)) == sorted(signed)
    assert rclient.llen(keys.queue(jobname)) == 0
    out = status_output(redis_address, jobname)
    assert "dead-lettered messages: 3" in out
    assert "a signed message, but the worker has no secret" in out
    with RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True)) as param:
        assert param({"x": (tasks.inc, 1)}, "x") == 2  # an unsigned run of the same job is still served
    workers.stop()
    log = workers.stderr()
    assert "this worker has no secret: set REDISPARAM_SECRET (or REDISPARAM_SECRET_FILE)" in log


def test_status_without_rejections(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]
) -> None:
    cli_workers(1)
    out = status_output(redis_address, jobname)
    assert "dead-lettered messages: 0" in out
    assert "last rejection" not in out

"""The worker daemon's crash-loop backoff: growing delays, a final message with the child's last error line."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.errors import KilledWorker
from dask_redisparam.worker.restarts import EXIT_CONFIG, START_FAILURES
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers


def _final_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "giving up" in line]


def _run_to_end(workers: CliWorkers, timeout: float) -> tuple[int, str, float]:
    """Wait for the daemon to exit; its exit code, its stderr and how long it ran."""
    started = time.monotonic()
    try:
        code = workers.process.wait(timeout)
    finally:
        workers.stop()
        log = workers.stderr()
        workers.log.close()
    return code, log, time.monotonic() - started


@pytest.fixture
def acl_user(redis_server: EmbeddedRedis, rclient: redis.Redis) -> Iterator[Callable[..., RedisAddress]]:
    """Create ACL users on the session's server: ``make(*rules)`` returns the address to log in as one."""
    made: list[str] = []

    def make(*rules: str) -> RedisAddress:
        name, password = f"crash-{uuid.uuid4().hex[:8]}", secrets.token_hex(12)
        rclient.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)  # type: ignore[no-untyped-call]
        made.append(name)
        return RedisAddress(path=redis_server.socket_path, username=name, password=password)

    yield make
    for name in made:
        rclient.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]


def test_a_worker_that_cannot_start_is_restarted_with_growing_delays_then_given_up(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis
) -> None:
    """Another daemon's live workers hold the ids (``--id node``): each new process fails to register (exit 3)."""
    ids = ["node"] + [f"node.{k}" for k in range(1, START_FAILURES + 2)]
    backend = Backend.connect(redis_address)
    try:
        for wid in ids:
            assert backend.register_worker(jobname, wid, {"host": "elsewhere"}, 120.0)
        code, log, elapsed = _run_to_end(CliWorkers(redis_address, jobname, 1, "--id", "node"), 60)
    finally:
        for wid in ids:
            backend.deregister_worker(jobname, wid)
        backend.close()
    assert code == 1, log
    delays = [float(d or 0) for d in re.findall(r"starting a new one(?: in ([\d.]+) s)?", log)]
    assert delays == [0.0, 0.25, 0.5, 1.0], log  # one per restart, doubling: not ~145 starts a minute
    assert elapsed >= sum(delays)
    # every process's own error line was passed through the daemon's stderr
    own = "\n".join(line for line in log.splitlines() if "giving up" not in line)
    assert re.findall(r"a live worker with id '([\w.]+)' already serves", own) == ids[:START_FAILURES]
    (final,) = _final_lines(log)
    assert f"worker node.4 failed {START_FAILURES} times in a row" in final, final
    assert "Its last error:" in final and "a live worker with id 'node.4' already serves job" in final, final


def test_a_worker_dying_at_start_on_a_missing_command_is_given_up_with_its_error(
    jobname: str, acl_user: Callable[..., RedisAddress]
) -> None:
    """A user who may use the job's keys but not ``BLMOVE``: today's workers died on it (exit code 1) forever."""
    address = acl_user(f"~drp:{{{jobname}}}:*", "+@all", "-blmove")
    code, log, elapsed = _run_to_end(CliWorkers(address, jobname, 1), 45)
    assert code != 0, log
    starts = len(re.findall(r"supervisor: worker \S+ died", log)) + 1
    assert starts <= START_FAILURES, log
    (final,) = _final_lines(log)
    assert "Its last error:" in final and "blmove" in final.lower(), final


def test_refused_credentials_end_the_daemon_at_once(jobname: str) -> None:
    """Checked before any worker process starts, and never waited on (the default waits for the server)."""
    with EmbeddedRedis(password=secrets.token_hex(12)) as server:
        wrong = RedisAddress(path=server.socket_path, password="not-the-password")
        code, log, elapsed = _run_to_end(CliWorkers(wrong, jobname, 2), 30)
    assert code == EXIT_CONFIG, log
    assert "supervisor:" not in log and "serving job" not in log, log  # no worker process was started
    assert "refused the default user" in log, log
    assert elapsed < 15


def test_a_job_the_user_may_not_use_is_given_up_at_once(jobname: str, acl_user: Callable[..., RedisAddress]) -> None:
    address = acl_user("~drp:{another-job}:*", "+@all")
    code, log, elapsed = _run_to_end(CliWorkers(address, jobname, 2), 30)
    assert code == EXIT_CONFIG, log
    assert "starting a new one" not in log, log  # a configuration error: no restart
    (final,) = _final_lines(log)
    assert "cannot work as configured (exit code 78)" in final, final
    assert f"the keys of job {jobname!r}" in final, final


def test_tasks_that_crash_their_worker_never_make_the_daemon_give_up(url_param: Callable[..., RedisParam]) -> None:
    """A worker that dies holding a message got as far as serving: backoff, but no give-up (the manager counts
    such crashes per task: allowed_failures)."""
    with url_param(1, allowed_failures=0) as param:
        for i in range(START_FAILURES):  # as many young deaths in a row as a failing start may have
            with pytest.raises(KilledWorker):
                param({f"doom-{i}": (tasks.always_exit,)}, f"doom-{i}")
        assert param({"x": (tasks.inc, 1)}, "x") == 2
        assert param._local is not None and param._local.is_running()

"""Rejections reach the manager: workers that refuse its messages make the compute fail within seconds, with
an error that says why and what to set; one misconfigured worker in a good pool only makes a warning.

Real worker daemons on a real redis-server, with secrets (or none) that do not match the manager's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import redis

from dask_redisparam import MessagesRejected, RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers

SECRET = "the-managers-secret-of-sufficient-length"
OTHER = "another-secret-of-sufficient-length"
FAIL_WITHIN = 15.0
"""Seconds within which the compute must fail (REJECT_SECONDS is 5; generous for a loaded machine)."""


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDISPARAM_SECRET", raising=False)
    monkeypatch.delenv("REDISPARAM_SECRET_FILE", raising=False)


def graph(n: int, seconds: float = 0.0) -> tuple[dict[tuple[str, int], tuple[object, ...]], list[tuple[str, int]]]:
    return {("t", i): (tasks.slow_inc, i, seconds) for i in range(n)}, [("t", i) for i in range(n)]


def start_workers(
    monkeypatch: pytest.MonkeyPatch, start: Callable[..., CliWorkers], secret: str | None, *args: str
) -> CliWorkers:
    with monkeypatch.context() as m:
        if secret is not None:
            m.setenv("REDISPARAM_SECRET", secret)
        return start(*args)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("manager_secret", "worker_secret", "reason", "fix"),
    [
        (SECRET, OTHER, "a bad signature", "give them the same REDISPARAM_SECRET"),
        (SECRET, None, "a signed message, but the worker has no secret", "set REDISPARAM_SECRET (or"),
        (None, SECRET, "an unsigned message, but the worker requires signed ones", "give the manager the workers'"),
        ("k2=" + SECRET, "k1=" + SECRET, "signed with a key id that the worker does not know", "same secret"),
    ],
    ids=["other-secret", "workers-without-secret", "manager-without-secret", "unknown-key-id"],
)
def test_workers_that_refuse_every_message_fail_the_compute_within_seconds(
    redis_address: RedisAddress,
    jobname: str,
    rclient: redis.Redis,
    cli_workers: Callable[..., CliWorkers],
    monkeypatch: pytest.MonkeyPatch,
    manager_secret: str | None,
    worker_secret: str | None,
    reason: str,
    fix: str,
) -> None:
    start_workers(monkeypatch, cli_workers, worker_secret, 2, "--id", "bad")
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, secret=manager_secret) as param:
        started = time.monotonic()
        with pytest.raises(MessagesRejected) as caught:
            param(*graph(6))
        took = time.monotonic() - started
    assert took < FAIL_WITHIN, f"the compute failed only after {took:.1f} s"
    text = str(caught.value)
    assert f"every live worker of job {jobname!r}" in text
    assert reason in text and fix in text
    assert "bad-0" in text and "bad-1" in text  # the workers, by id
    assert keys.dead(jobname) in text
    # nothing of the run is left; the job keeps its workers' keys, the dead-letter list and the last rejection
    left = {k.decode() for k in rclient.scan_iter(match=keys.job_pattern(jobname))}
    expected = {keys.workers(jobname), keys.dead(jobname), keys.rejected(jobname), *keys.statistics(jobname)}
    assert left - expected == {keys.worker(jobname, "bad-0"), keys.worker(jobname, "bad-1")}
    assert rclient.llen(keys.dead(jobname)) >= 2


@pytest.mark.timeout(60)
def test_one_misconfigured_worker_in_a_good_pool_only_makes_a_warning(
    redis_address: RedisAddress,
    jobname: str,
    rclient: redis.Redis,
    cli_workers: Callable[..., CliWorkers],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_workers(monkeypatch, cli_workers, SECRET, 2, "--id", "good")
    start_workers(monkeypatch, cli_workers, None, 1, "--id", "nosecret")
    url = redis_address.to_url(show_password=True)
    n = 40
    with RedisParam(jobname=jobname, is_worker=False, url=url, secret=SECRET) as param:
        with caplog.at_level(logging.WARNING, logger="dask_redisparam"):
            assert param(*graph(n, 0.05)) == tuple(range(1, n + 1))  # exact: what it refused ran elsewhere
    assert rclient.llen(keys.dead(jobname)) >= 1  # the bad worker did take (and refuse) messages
    warnings = [r.getMessage() for r in caplog.records if "refused a task message" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once for the bad worker, not once per message
    assert "worker nosecret refused" in warnings[0] and "set REDISPARAM_SECRET" in warnings[0]

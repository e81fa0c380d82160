"""Loss notices are signed: a forged one in a signed run's ``done`` list counts no death (no KilledWorker), while
a real one, from a reaper with the job's secret, still does."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
import redis

from dask_redisparam import KilledWorker, RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.wire.protocol import encode_lost, lost_notices
from dask_redisparam.wire.signing import Signer
from tests import tasks
from tests.conftest import CliWorkers

SECRET = "a-shared-secret-of-sufficient-length"


def run_id_of_live_run(rclient: redis.Redis, jobname: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = [k.decode() for k in rclient.scan_iter(match=keys.run_pattern(jobname, "*"))]
        alive = [k for k in found if k.endswith(":alive")]
        if alive:
            run_id = keys.run_id_of(alive[0])
            assert run_id is not None
            return run_id
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_a_forged_loss_notice_counts_no_death(
    redis_address: RedisAddress,
    jobname: str,
    rclient: redis.Redis,
    cli_workers: Callable[..., CliWorkers],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("REDISPARAM_SECRET", SECRET)
    cli_workers(1)
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, allowed_failures=0) as param:
        forged_run: list[str] = []

        def forge() -> None:
            run_id = run_id_of_live_run(rclient, jobname)
            forged_run.append(run_id)
            now = int(time.time() * 1e6)
            rclient.rpush(keys.done(jobname, run_id), b"!L|0|%d|w-forged" % now)  # as today's reapers post it
            forged = [
                encode_lost(0, now + 1, "w-forged"),  # unsigned
                encode_lost(0, now + 2, "w-forged", Signer.from_secret("not-the-jobs-secret-1234"), jobname, run_id),
                encode_lost(0, now + 3, "w-forged", Signer.from_secret(SECRET), jobname, "another-run"),  # replayed
            ]
            rclient.rpush(keys.done(jobname, run_id), *forged)

        forger = threading.Thread(target=forge)
        forger.start()
        with caplog.at_level(logging.WARNING, logger="dask_redisparam"):
            assert param({"slow": (tasks.slow_inc, 1, 2.0)}, "slow") == 2  # no KilledWorker
        forger.join()
    assert forged_run
    ignored = [r.getMessage() for r in caplog.records if "ignored a loss notice" in r.getMessage()]
    assert len(ignored) == 4, ignored  # each with a warning
    assert not [r for r in caplog.records if "died running" in r.getMessage()]


@pytest.mark.timeout(60)
def test_a_signed_loss_notice_from_a_reaper_still_counts(
    redis_address: RedisAddress,
    jobname: str,
    rclient: redis.Redis,
    cli_workers: Callable[..., CliWorkers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDISPARAM_SECRET", SECRET)
    cli_workers(1)
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, allowed_failures=0) as param:

        def notify() -> None:
            run_id = run_id_of_live_run(rclient, jobname)
            notice = lost_notices(Signer.from_secret(SECRET), jobname, "w-reaped")(run_id, 0, int(time.time() * 1e6))
            rclient.rpush(keys.done(jobname, run_id), notice)

        notifier = threading.Thread(target=notify)
        notifier.start()
        with pytest.raises(KilledWorker, match="last: w-reaped"):
            param({"slow": (tasks.slow_inc, 1, 2.0)}, "slow")
        notifier.join()


@pytest.mark.timeout(60)
def test_the_supervisor_signs_its_loss_notices(url_param: Callable[..., RedisParam]) -> None:
    with url_param(1, secret=SECRET, allowed_failures=0) as param:  # local workers: a supervisor with the secret
        with pytest.raises(KilledWorker, match="task 'doom'"):
            param({"doom": (tasks.always_exit, None)}, "doom")

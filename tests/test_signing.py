"""Signed payloads: forged or replayed task messages are never unpickled; workers keep serving."""

from __future__ import annotations

import pathlib
import pickle
import time
from collections.abc import Callable

import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.wire.protocol import Batch, Entry, encode_task, open_task
from dask_redisparam.wire.signing import PayloadRejected, Signer
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers

SECRET = "a-shared-secret-of-sufficient-length"


class Marker:
    """A pickle that creates a file when unpickled: what an attacker would push."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_embedded_default_is_signed() -> None:
    with RedisParam(1) as param:
        assert param._signer is not None  # a fresh secret for the private pool
        assert param({"x": (tasks.inc, 1)}, "x") == 2


def test_forged_task_is_rejected_and_the_worker_keeps_serving(
    redis_address: RedisAddress,
    jobname: str,
    rclient: redis.Redis,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("REDISPARAM_SECRET", SECRET)
    workers = CliWorkers(redis_address, jobname, 1)
    marker = tmp_path / "pwned"
    try:
        wait_for_workers(redis_address, jobname, 1)
        forged_payload = pickle.dumps(Marker(str(marker)))
        for forged in (
            b"D4|r1|0|0|||" + forged_payload,  # unsigned
            b"D4|r1|0|0|0|" + b"0" * 64 + b"|" + forged_payload,  # a made-up signature
            encode_task("r1", 0, 0, forged_payload, Signer.from_secret("some-other-secret-1234"), jobname),
        ):
            rclient.lpush(keys.queue(jobname), forged)
        with RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True)) as param:
            assert param({"x": (tasks.inc, 1)}, "x") == 2  # the same worker serves the next compute
        time.sleep(0.2)
        assert not marker.exists()
        assert rclient.llen(keys.dead(jobname)) == 3
    finally:
        workers.stop()
        log = workers.stderr()
        workers.log.close()
    assert log.count("rejected a task message (not unpickled; dead-lettered)") == 3


def test_a_message_copied_into_another_job_is_rejected(
    redis_address: RedisAddress, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("REDISPARAM_SECRET", SECRET)
    signer = Signer.from_secret(SECRET)
    marker = tmp_path / "ran"
    batch = Batch(True, {}, [Entry(0, "k", None, (), False)])
    valid_for_a = encode_task("r1", 0, 0, pickle.dumps(batch), signer, "job-a")
    with pytest.raises(PayloadRejected):
        from dask_redisparam.wire.protocol import open_task

        open_task(valid_for_a, signer, "job-b")
    workers = CliWorkers(redis_address, "job-b", 1)
    try:
        wait_for_workers(redis_address, "job-b", 1)
        rclient.lpush(keys.queue("job-b"), valid_for_a)
        deadline = time.monotonic() + 10
        while not rclient.llen(keys.dead("job-b")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rclient.lrange(keys.dead("job-b"), 0, -1) == [valid_for_a]
        assert not marker.exists()
    finally:
        workers.stop()
        workers.log.close()
        rclient.delete(keys.dead("job-b"))


def test_a_worker_without_the_secret_refuses_signed_work(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDISPARAM_SECRET", raising=False)
    workers = CliWorkers(redis_address, jobname, 1, "--no-restart")
    try:
        wait_for_workers(redis_address, jobname, 1)
        message = encode_task("r1", 0, 0, b"payload", Signer.from_secret(SECRET), jobname)
        with pytest.raises(PayloadRejected, match="no secret"):  # signed: refused without the secret
            open_task(message, None, jobname)
        rclient.lpush(keys.queue(jobname), message)
        deadline = time.monotonic() + 10
        while not rclient.llen(keys.dead(jobname)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rclient.lrange(keys.dead(jobname), 0, -1) == [message]  # refused, never unpickled
        assert workers.process.poll() is None  # and the worker goes on serving (tests/test_bad_messages.py)
    finally:
        workers.stop()
        log = workers.stderr()
        workers.log.close()
    assert "this worker has no secret: set REDISPARAM_SECRET" in log


def test_signed_pool_end_to_end(url_param: Callable[..., RedisParam]) -> None:
    with url_param(2, secret=SECRET) as param:
        assert param({("t", i): (tasks.inc, i) for i in range(20)}, [("t", i) for i in range(20)]) == tuple(
            range(1, 21)
        )
        assert "a-shared-secret" not in repr(param)


def test_key_rotation() -> None:
    old = Signer.from_secret({"k1": "first-secret-0123456789"})
    both = Signer.from_secret({"k2": "second-secret-0123456789", "k1": "first-secret-0123456789"})
    sealed_by_old = old.seal(b"value", b"job", b"data")
    assert bytes(both.unseal(sealed_by_old, b"value", b"job")) == b"data"
    assert both.key_id == "k2"
    with pytest.raises(PayloadRejected, match="unknown key id 'k2'"):
        old.unseal(both.seal(b"value", b"job", b"data"), b"value", b"job")

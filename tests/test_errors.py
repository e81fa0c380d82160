"""Stop on error: the original exception type with the remote traceback and key; nothing runs after it, nothing is
left in Redis, the workers keep serving; unpicklable functions, arguments and results give clear errors."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable

import pytest
import redis

from dask_redisparam import RedisParam, RemoteError, SerializationError
from dask_redisparam.backend import keys
from tests import tasks
from tests.conftest import CliWorkers


def run_keys(rclient: redis.Redis, jobname: str) -> list[bytes]:
    return list(rclient.scan_iter(match=f"drp:{{{jobname}}}:run:*"))


def test_exception_type_traceback_and_key_are_kept(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], tmp_path: pathlib.Path
) -> None:
    cli_workers(1)
    side_effect = tmp_path / "downstream-ran"
    dsk = {"a": (tasks.divide, 1, 0), "b": (tasks.touch, str(side_effect), "a")}
    with pytest.raises(ZeroDivisionError) as info:
        manager(dsk, "b")
    err = info.value
    assert isinstance(err, RemoteError)
    assert err.key == "a"
    assert "in divide" in err.remote_traceback and "return x / y" in err.remote_traceback
    assert err.worker
    assert str(err) == "division by zero"
    assert not side_effect.exists()


def test_custom_exception_keeps_its_attributes(manager: RedisParam, cli_workers: Callable[..., CliWorkers]) -> None:
    cli_workers(1)
    with pytest.raises(tasks.CustomError) as info:
        manager({"c": (tasks.raise_custom, 5)}, "c")
    assert info.value.code == 5
    assert info.value.args == ("custom failure", 5)


def test_queued_tasks_are_removed_and_workers_keep_serving(
    redis_address: object,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    tmp_path: pathlib.Path,
) -> None:
    cli_workers(1)
    url = redis_address.to_url(show_password=True)  # type: ignore[attr-defined]
    # one worker, three messages in flight: the failing task first, two slow ones queued behind it
    with RedisParam(jobname=jobname, is_worker=False, url=url, queue_multiplier=3) as param:
        dsk: dict[object, object] = {"a-bad": (tasks.slow_fail, 0.3)}
        for i in range(6):
            dsk[("b-slow", i)] = (tasks.touch, str(tmp_path / f"slow-{i}"), i)
        started = time.monotonic()
        with pytest.raises(ValueError, match="slow failure"):
            param(dsk, list(dsk))
        assert time.monotonic() - started < 5
        assert rclient.llen(keys.queue(jobname)) == 0
        assert run_keys(rclient, jobname) == []
        time.sleep(0.5)
        ran = sorted(p.name for p in tmp_path.iterdir())
        assert len(ran) < 6, ran  # the withdrawn messages never ran
        # the same worker serves the next compute
        assert param({"x": (tasks.inc, 1)}, "x") == 2


def test_unpicklable_function_fails_at_submission(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis, jobname: str
) -> None:
    cli_workers(1)
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"cannot pickle task 'f'.*lock"):
        manager({"f": (lambda: lock,)}, "f")
    assert rclient.llen(keys.queue(jobname)) == 0
    assert run_keys(rclient, jobname) == []
    assert manager({"x": (tasks.inc, 1)}, "x") == 2


def test_unpicklable_argument_fails_at_submission(manager: RedisParam, cli_workers: Callable[..., CliWorkers]) -> None:
    cli_workers(1)
    with pytest.raises(SerializationError, match=r"cannot pickle task 'g'.*refuse to be pickled"):
        manager({"g": (tasks.noop, tasks.Unpicklable())}, "g")
    assert manager({"x": (tasks.inc, 2)}, "x") == 3


def test_unpicklable_result_fails_its_task_and_the_worker_survives(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], jobname: str, rclient: redis.Redis
) -> None:
    workers = cli_workers(1)
    with pytest.raises(SerializationError, match=r"cannot pickle the result of task 'lock'") as info:
        manager({"lock": (tasks.make_lock,)}, "lock")
    assert isinstance(info.value, RemoteError)
    assert manager({"x": (tasks.inc, 3)}, "x") == 4
    assert workers.process.poll() is None
    assert run_keys(rclient, jobname) == []


def test_no_keys_left_after_a_failed_run(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], jobname: str, rclient: redis.Redis
) -> None:
    cli_workers(2)
    dsk = {("ok", i): (tasks.inc, i) for i in range(50)}
    dsk["bad"] = (tasks.fail, "late failure")  # type: ignore[assignment]
    with pytest.raises(ValueError, match="late failure"):
        manager(dsk, list(dsk))
    time.sleep(0.3)  # let running tasks finish: their results must not re-create the run's keys
    assert run_keys(rclient, jobname) == []
    assert rclient.llen(keys.queue(jobname)) == 0

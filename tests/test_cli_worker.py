"""The ``dask-redisparam-worker`` daemon: workers started from the command line serve a manager-only param."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import redis

from dask_redisparam import RedisParam
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers, left_keys, wait_for_workers


def test_two_cli_workers_both_run_tasks(manager: RedisParam, cli_workers: Callable[..., CliWorkers]) -> None:
    cli_workers(1)
    cli_workers(1)
    dsk = {("p", i): (tasks.sleep_then_pid, 0.05, i) for i in range(40)}
    pids = manager(dsk, list(dsk))
    assert len(pids) == 40
    assert len(set(pids)) == 2
    assert os.getpid() not in pids
    assert len(manager.worker_ids()) == 2


def test_nworkers_starts_processes_with_ids(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]
) -> None:
    cli_workers(3, "--id", "node7")
    assert sorted(wait_for_workers(redis_address, jobname, 3)) == ["node7-0", "node7-1", "node7-2"]


def test_python_m_entry_point_and_burst(redis_address: RedisAddress, jobname: str, rclient: redis.Redis) -> None:
    env = dict(os.environ, REDISPARAM_URL=redis_address.to_url(show_password=True), REDISPARAM_JOBNAME=jobname)
    done = subprocess.run(
        [sys.executable, "-m", "dask_redisparam.worker", "--burst"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr
    assert left_keys(rclient, jobname) == []


def test_warm_stop_exits_zero_and_deregisters(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis
) -> None:
    workers = cli_workers(2)
    started = time.monotonic()
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(10) == 0
    assert time.monotonic() - started < 5
    assert left_keys(rclient, jobname) == []


def test_missing_server_is_a_usage_error(jobname: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    done = subprocess.run(
        ["dask-redisparam-worker", "--jobname", jobname], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "no Redis server configured" in done.stderr


def test_unreachable_server_names_host_and_port(jobname: str) -> None:
    done = subprocess.run(
        ["dask-redisparam-worker", "--jobname", jobname, "--host", "127.0.0.1", "--port", "1"]
        + ["--connect-timeout", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "127.0.0.1:1" in done.stderr


def test_max_tasks_exits_after_that_many_messages(
    manager: RedisParam, redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]
) -> None:
    limited = cli_workers(1, "--max-tasks", "2")
    assert manager({"a": (tasks.inc, 1)}, "a") == 2
    assert manager({"b": (tasks.inc, 2)}, "b") == 3
    assert limited.process.wait(10) == 0

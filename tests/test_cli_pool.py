"""The ``dask-redisparam`` command group: status, stop-all, alive, clean; also through ``dask redisparam``."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers, left_keys


def run_cli(*args: str, url: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    if url is not None:
        env["REDISPARAM_URL"] = url
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)


def test_status_shows_workers_queue_runs_and_rate(
    redis_address: RedisAddress, jobname: str, manager: RedisParam, cli_workers: Callable[..., CliWorkers]
) -> None:
    cli_workers(2, "--id", "st")
    url = redis_address.to_url(show_password=True)
    assert manager({("t", i): (tasks.inc, i) for i in range(30)}, [("t", i) for i in range(30)])[0] == 1
    done = run_cli("dask-redisparam", "status", "--jobname", jobname, "--rate-window", "0.2", url=url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"job {jobname} on {redis_address.describe()}" in out
    assert "workers: 2" in out and "queued messages: 0" in out and "tasks/s:" in out
    assert "active runs: 0" in out
    header = next(line for line in out.splitlines() if line.startswith("ID"))
    expected = ["ID", "HOST", "PID", "TASKS", "UP", "(s)", "RSS", "(MiB)", "BEAT", "(s)", "RESOURCES", "CURRENT"]
    assert header.split() == expected
    rows = [line.split() for line in out.splitlines() if line.startswith("st-")]
    assert [r[0] for r in rows] == ["st-0", "st-1"]
    assert sum(int(r[3]) for r in rows) == 30  # tasks done, by worker
    assert redis_address.password is None or redis_address.password not in out + done.stderr


def test_status_through_dask_cli(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]
) -> None:
    cli_workers(1)
    url = redis_address.to_url(show_password=True)
    done = run_cli("dask", "redisparam", "status", "--jobname", jobname, "--rate-window", "0", url=url)
    assert done.returncode == 0, done.stderr
    assert "workers: 1" in done.stdout


def test_stop_all_stops_nworkers_3_within_5_seconds(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis
) -> None:
    workers = cli_workers(3)
    url = redis_address.to_url(show_password=True)
    started = time.monotonic()
    done = run_cli("dask-redisparam", "stop-all", "--jobname", jobname, url=url)
    assert done.returncode == 0, done.stderr
    assert "asked 3 worker(s)" in done.stdout
    assert workers.process.wait(5) == 0
    assert time.monotonic() - started < 5
    assert left_keys(rclient, jobname) == []


def test_alive_exit_codes(redis_address: RedisAddress) -> None:
    assert run_cli("dask-redisparam", "alive", url=redis_address.to_url(show_password=True)).returncode == 0
    down = run_cli("dask-redisparam", "alive", "--host", "127.0.0.1", "--port", "1")
    assert down.returncode == 1 and "127.0.0.1:1: not reachable" in down.stdout


def test_clean_removes_dead_workers_and_runs_and_requeues(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis
) -> None:
    # a worker that died holding a message, and a run whose manager died
    rclient.sadd(keys.workers(jobname), "ghost")
    rclient.rpush(keys.processing(jobname, "ghost"), b"D4|deadrun|0|0|payload", b"D4|liverun|1|0|payload")
    rclient.hset(keys.data(jobname, "deadrun"), "1", b"x")
    rclient.rpush(keys.done(jobname, "deadrun"), b"record")
    rclient.set(keys.alive(jobname, "liverun"), b"1", px=60_000)
    done = run_cli("dask-redisparam", "clean", "--jobname", jobname, url=redis_address.to_url(show_password=True))
    assert done.returncode == 0, done.stderr
    assert "removed 1 dead worker(s), 1 dead run(s); requeued 2 message(s)" in done.stdout
    assert rclient.lrange(keys.queue(jobname), 0, -1) == [b"D4|liverun|1|0|payload"]
    left = sorted(k.decode() for k in rclient.scan_iter(match=keys.job_pattern(jobname)))
    assert left == sorted([keys.queue(jobname), keys.alive(jobname, "liverun")])
    rclient.delete(keys.queue(jobname), keys.alive(jobname, "liverun"))

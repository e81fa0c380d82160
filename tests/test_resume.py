"""Resume: a compute reuses the values a dead run of the same job left in Redis, found by task identity.

Real redis-server, real worker daemons; the manager that dies is a separate Python process SIGKILLed by the test.
Executions are counted through a side channel (each task appends a line to a file), never through the project.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from dask.callbacks import Callback

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks_resume
from tests.conftest import CliWorkers, wait_for_workers

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 12
"""Executions beyond a workload's tasks that a kill may cost: tasks running when the dead run was declared dead,
whose results the workers then drop (2 workers, one message each, up to ~6 tasks of 20 ms in a message)."""


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _manager(
    kind: str, address: RedisAddress, jobname: str, path: Path, seconds: float, stderr: int | None = None
) -> subprocess.Popen[str]:
    """``python -m tests.tasks_resume``: the workload's manager, in a process of its own; returns once it runs."""
    argv = [sys.executable, "-m", "tests.tasks_resume", kind, jobname, address.to_url(show_password=True)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [*argv, str(path), str(seconds)], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    return proc


def _kill_at(proc: subprocess.Popen[str], path: Path, executions: int, timeout: float = 60.0) -> int:
    """SIGKILL the manager once ``executions`` tasks have run; return how many had run then."""
    deadline = time.monotonic() + timeout
    while _lines(path) < executions:
        assert proc.poll() is None, "the manager ended before the kill"
        assert time.monotonic() < deadline, f"only {_lines(path)} executions after {timeout} s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    return _lines(path)


def _run_keys(client: redis.Redis, jobname: str) -> list[str]:
    """The job's keys of runs (and its registry of runs); a job whose runs all ended cleanly has none."""
    found = [k.decode() for k in client.scan_iter(match=keys.job_pattern(jobname))]
    return sorted(k for k in found if ":run:" in k or ":redo:" in k or k == keys.runs(jobname))


def test_a_400_chunk_array_resumes_after_its_manager_is_sigkilled(
    redis_address: RedisAddress,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    """Done-when 1: the same script run again gives the exact result, executing at most the unfinished tasks plus
    those in flight at the kill."""
    cli_workers(2)
    count = tmp_path / "executions"
    killed_at = _kill_at(_manager("array", redis_address, jobname, count, 0.01), count, 200)
    assert killed_at < 400
    again = _manager("array", redis_address, jobname, count, 0.01, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out.strip() == f"result {tasks_resume.expected('array')}"
    total = _lines(count)
    print(f"killed after {killed_at} executions; {total} in all for 400 tasks")
    assert total <= 400 + IN_FLIGHT, (killed_at, total)
    assert "dask-redisparam: resumed " in err and " tasks from run " in err and "died " in err, err
    assert _run_keys(rclient, jobname) == []  # the rerun finished: its keys and the dead run's are gone


@pytest.mark.parametrize("kind", ["frame", "delayed", "map", "iterate"])
def test_collections_map_and_iterate_resume_after_a_sigkill(
    kind: str,
    redis_address: RedisAddress,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    manager: RedisParam,
    rclient: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Done-when 2: a dask.dataframe groupby-aggregate, an impure-delayed tree reduction, map and iterate, computed
    again by another process (this one), reuse what the killed manager's run left."""
    cli_workers(2)
    count = tmp_path / "executions"
    n = tasks_resume.tasks_of(kind)
    killed_at = _kill_at(_manager(kind, redis_address, jobname, count, 0.02), count, n // 2)
    caplog.set_level(logging.INFO, logger="dask_redisparam.manager.resume")
    assert tasks_resume.workload(kind, manager, str(count)) == tasks_resume.expected(kind)
    total = _lines(count)
    print(f"{kind}: killed after {killed_at} executions; {total} in all for {n} tasks")
    assert total <= n + IN_FLIGHT, (killed_at, total)
    assert "resumed " in caplog.text and " tasks from run " in caplog.text, caplog.text
    assert _run_keys(rclient, jobname) == []


class _Interrupt(Callback):
    """Raise KeyboardInterrupt in the manager once ``after`` tasks finished (a user interrupting a cell)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.seen = after, 0

    def _posttask(self, *args: Any) -> None:
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


def test_an_interrupted_compute_keeps_its_values_and_the_resumed_one_leaves_no_key(
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    manager: RedisParam,
    rclient: redis.Redis,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    cli_workers(2)
    count = tmp_path / "executions"
    with pytest.raises(KeyboardInterrupt), _Interrupt(20):
        tasks_resume.workload("delayed", manager, str(count))
    interrupted = _lines(count)
    (run_id,) = manager.backend.registered_runs(jobname)
    assert not rclient.exists(keys.alive(jobname, run_id), keys.done(jobname, run_id))  # dead at once
    assert rclient.pttl(keys.data(jobname, run_id)) > 3_500_000  # resume_ttl: an hour
    assert tasks_resume.workload("delayed", manager, str(count)) == tasks_resume.expected("delayed")
    assert _lines(count) <= 63 + IN_FLIGHT, (interrupted, _lines(count))
    assert "dask-redisparam: resumed " in capfd.readouterr().err  # logging not configured: still shown
    assert _run_keys(rclient, jobname) == []


def test_resume_ttl_zero_keeps_nothing_after_an_interrupt(
    redis_address: RedisAddress,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    cli_workers(1)
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, resume_ttl=0) as param:
        with pytest.raises(KeyboardInterrupt), _Interrupt(5):
            tasks_resume.workload("delayed", param, str(tmp_path / "count"))
    assert _run_keys(rclient, jobname) == []


def test_two_live_managers_on_the_same_identities_each_compute_them_exactly(
    redis_address: RedisAddress,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    """The concurrency policy: a live run's values are never reused; each manager computes (no single flight)."""
    cli_workers(2)
    count = tmp_path / "executions"
    url = redis_address.to_url(show_password=True)
    params = [RedisParam(jobname=jobname, is_worker=False, url=url).start() for _ in range(2)]
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def compute(i: int) -> None:
        barrier.wait()
        results[i] = tasks_resume.workload("delayed", params[i], str(count))

    threads = [threading.Thread(target=compute, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for param in params:
            param.stop()
    assert results == [tasks_resume.expected("delayed")] * 2
    assert _lines(count) == 2 * 63  # each ran every task once
    assert _run_keys(rclient, jobname) == []


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-persistence"])
def test_a_redis_restart_between_crash_and_rerun(appendonly: bool, tmp_path: Path) -> None:
    """Done-when 6: with AOF the rerun still resumes; without persistence it recomputes everything, no error."""
    jobname = "restart-" + os.urandom(4).hex()
    count = tmp_path / "executions"
    with EmbeddedRedis(appendonly=appendonly, dir=tmp_path / "data") as server:
        workers = CliWorkers(server.address, jobname, 2)
        try:
            wait_for_workers(server.address, jobname, 2)
            killed_at = _kill_at(_manager("delayed", server.address, jobname, count, 0.02), count, 32)
            time.sleep(1.1)  # appendfsync everysec: what was written is on disk
            server.kill()
            server.restart()
            wait_for_workers(server.address, jobname, 2)
            before = _lines(count)
            url = server.address.to_url(show_password=True)
            with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
                assert tasks_resume.workload("delayed", param, str(count)) == tasks_resume.expected("delayed")
            rerun = _lines(count) - before
            print(f"appendonly={appendonly}: killed after {killed_at}; the rerun executed {rerun} of 63")
            if appendonly:
                assert rerun <= 63 - killed_at + IN_FLIGHT, (killed_at, before, rerun)
            else:
                assert rerun == 63
        finally:
            workers.stop()
            workers.log.close()

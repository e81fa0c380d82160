"""Resume: a compute reuses the values a dead run of the same job left in Redis, found by task identity.

Real redis-server, real worker daemons; the manager that dies is a separate Python process SIGKILLed by the test.
Executions are counted through a side channel (each task appends a line to a file), never through the project.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dask.callbacks import Callback

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.manager.run_dispatch import TARGET_SECONDS
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks, tasks_resume
from tests.conftest import CliWorkers, wait_for_workers

ROOT = Path(__file__).resolve().parent.parent


def in_flight(seconds: float) -> int:
    """Executions beyond a workload's tasks that a kill may cost: tasks running when the dead run was declared dead,
    whose results the workers then drop (2 workers, one message each, a message of at most ``TARGET_SECONDS`` of
    tasks of ``seconds``), and two to spare."""
    return 2 * math.ceil(TARGET_SECONDS / seconds) + 2


IN_FLIGHT = in_flight(0.02)


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


@pytest.fixture(scope="module")
def pool(redis_server: EmbeddedRedis) -> Iterator[str]:
    """Two worker daemons serving one job for the whole module (starting them is most of a test's time)."""
    jobname = "resume-" + uuid.uuid4().hex[:8]
    workers = CliWorkers(redis_server.address, jobname, 2)
    try:
        wait_for_workers(redis_server.address, jobname, 2)
        yield jobname
    finally:
        workers.stop()
        workers.log.close()


@pytest.fixture
def job(pool: str, rclient: redis.Redis) -> str:
    """The pool's job, without the runs an earlier test may have left (so that nothing resumes across tests)."""
    for key in [*rclient.scan_iter(match=keys.runs_pattern(pool)), keys.runs(pool)]:
        rclient.delete(key)
    return pool


@pytest.fixture
def manager_of(redis_address: RedisAddress) -> Iterator[Callable[..., RedisParam]]:
    """Make started manager-only params on the test's server; stopped at the end."""
    made: list[RedisParam] = []

    def make(jobname: str, **kwargs: Any) -> RedisParam:
        param = RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True), **kwargs)
        made.append(param.start())
        return param

    yield make
    for param in made:
        param.stop()


def _run_keys(client: redis.Redis, jobname: str) -> list[str]:
    """The job's keys of runs (and its registry of runs); a job whose runs all ended cleanly has none."""
    found = [k.decode() for k in client.scan_iter(match=keys.job_pattern(jobname))]
    return sorted(k for k in found if ":run:" in k or ":redo:" in k or k == keys.runs(jobname))


def test_a_400_chunk_array_resumes_after_its_manager_is_sigkilled(
    redis_address: RedisAddress, job: str, rclient: redis.Redis, tmp_path: Path
) -> None:
    """Done-when 1: the same script run again gives the exact result, executing at most the unfinished tasks plus
    those in flight at the kill."""
    count = tmp_path / "executions"
    killed_at = _kill_at(_manager("array", redis_address, job, count, 0.01), count, 200)
    assert killed_at < 400
    again = _manager("array", redis_address, job, count, 0.01, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out.strip() == f"result {tasks_resume.expected('array')}"
    total = _lines(count)
    print(f"killed after {killed_at} executions; {total} in all for 400 tasks")
    assert total <= 400 + in_flight(0.01), (killed_at, total)
    assert "dask-redisparam: resumed " in err and " tasks from run " in err and "died " in err, err
    assert _run_keys(rclient, job) == []  # the rerun finished: its keys and the dead run's are gone


@pytest.mark.parametrize("kind", ["frame", "delayed", "map", "iterate"])
def test_collections_map_and_iterate_resume_after_a_sigkill(
    kind: str,
    redis_address: RedisAddress,
    job: str,
    manager_of: Callable[..., RedisParam],
    rclient: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Done-when 2: a dask.dataframe groupby-aggregate, an impure-delayed tree reduction, map and iterate, computed
    again by another process (this one), reuse what the killed manager's run left."""
    count = tmp_path / "executions"
    n = tasks_resume.tasks_of(kind)
    killed_at = _kill_at(_manager(kind, redis_address, job, count, 0.02), count, n // 2)
    assert killed_at > IN_FLIGHT  # so that a full recompute would fail the bound below
    caplog.set_level(logging.INFO, logger="dask_redisparam.manager.resume")
    assert tasks_resume.workload(kind, manager_of(job), str(count)) == tasks_resume.expected(kind)
    total = _lines(count)
    print(f"{kind}: killed after {killed_at} executions; {total} in all for {n} tasks")
    assert total <= n + IN_FLIGHT, (killed_at, total)
    assert "resumed " in caplog.text and " tasks from run " in caplog.text, caplog.text
    assert _run_keys(rclient, job) == []


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
    job: str,
    manager_of: Callable[..., RedisParam],
    rclient: redis.Redis,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    count = tmp_path / "executions"
    manager = manager_of(job)
    with pytest.raises(KeyboardInterrupt), _Interrupt(20):
        tasks_resume.workload("delayed", manager, str(count))
    interrupted = _lines(count)
    (run_id,) = manager.backend.registered_runs(job)
    assert not rclient.exists(keys.alive(job, run_id), keys.done(job, run_id))  # dead at once
    assert rclient.pttl(keys.data(job, run_id)) > 3_500_000  # resume_ttl: an hour
    assert tasks_resume.workload("delayed", manager, str(count)) == tasks_resume.expected("delayed")
    assert _lines(count) <= 63 + IN_FLIGHT, (interrupted, _lines(count))
    assert "dask-redisparam: resumed " in capfd.readouterr().err  # logging not configured: still shown
    assert _run_keys(rclient, job) == []


def test_resume_ttl_zero_keeps_nothing_after_an_interrupt(
    job: str, manager_of: Callable[..., RedisParam], rclient: redis.Redis, tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt), _Interrupt(5):
        tasks_resume.workload("delayed", manager_of(job, resume_ttl=0), str(tmp_path / "count"))
    assert _run_keys(rclient, job) == []


def test_two_live_managers_on_the_same_identities_each_compute_them_exactly(
    job: str, manager_of: Callable[..., RedisParam], rclient: redis.Redis, tmp_path: Path
) -> None:
    """The concurrency policy: a live run's values are never reused; each manager computes (no single flight)."""
    count = tmp_path / "executions"
    params = [manager_of(job), manager_of(job)]
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def compute(i: int) -> None:
        barrier.wait()
        results[i] = tasks_resume.workload("delayed", params[i], str(count))

    threads = [threading.Thread(target=compute, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [tasks_resume.expected("delayed")] * 2
    assert _lines(count) == 2 * 63  # each ran every task once
    assert _run_keys(rclient, job) == []


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


def test_an_iterate_stopped_by_a_failing_element_leaves_no_key(
    job: str, manager_of: Callable[..., RedisParam], rclient: redis.Redis
) -> None:
    """Stopping on purpose (``stop_on_error``) ends the run as a finished one, not as one kept for resume."""
    with pytest.raises(ZeroDivisionError):
        manager_of(job, stop_on_error=True).iterate(iter(range(3)), tasks.divide, y=0)
    assert _run_keys(rclient, job) == []


def test_large_values_resume_with_their_parts(
    job: str, manager_of: Callable[..., RedisParam], rclient: redis.Redis, tmp_path: Path
) -> None:
    """A value stored as parts (``wire/bulk.py``) is copied with them: the rerun reads it, unchanged."""
    count = str(tmp_path / "made")
    dsk: dict[Any, Any] = {("a", i): (tasks.counted_make_array, count, 9 << 20, float(i)) for i in range(3)}
    dsk["total"] = (tasks.sum_all, *[(tasks.array_sum, ("a", i)) for i in range(3)])
    dsk["slow"] = (tasks.slow_array_sum, ("a", 0), 1.0)  # running when the interrupt comes: ("a", 0) is kept
    manager = manager_of(job)
    with pytest.raises(KeyboardInterrupt), _Interrupt(3):
        manager(dsk, ["total", "slow"])
    made = _lines(Path(count))
    assert manager(dsk, ["total", "slow"]) == (3.0 * (9 << 20) // 8, 0.0)
    assert _lines(Path(count)) == made  # every array was resumed, none made again
    assert _run_keys(rclient, job) == []

"""Fault tolerance: crashed, killed, stopped and timed-out workers; nothing lost, nothing recorded twice."""

from __future__ import annotations

import collections
import os
import pathlib
import random
import signal
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import dask
import psutil
import pytest
from dask.callbacks import Callback

from dask_redisparam import KilledWorker, RedisParam, TaskTimeout
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers, start_manager_process, wait_for_workers


class CountCompletions(Callback):  # type: ignore[misc]
    """Counts, per key, how often the manager recorded a completion."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[Hashable] = collections.Counter()

    def _posttask(self, key: Hashable, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self.counts[key] += 1


def tree(leaves: int, seconds: float) -> tuple[dict[Hashable, Any], Hashable]:
    """A reduction tree (split 8) over ``leaves`` sleeping leaves."""
    dsk: dict[Hashable, Any] = {("leaf", i): (tasks.sleep_leaf, i, seconds) for i in range(leaves)}
    level, names = 0, [("leaf", i) for i in range(leaves)]
    while len(names) > 1:
        level += 1
        groups = [names[i : i + 8] for i in range(0, len(names), 8)]
        names = [(f"sum-{level}", j) for j in range(len(groups))]
        for name, group in zip(names, groups, strict=True):
            dsk[name] = (tasks.sum_all, *group)
    return dsk, names[0]


def worker_children(workers: CliWorkers) -> list[psutil.Process]:
    return psutil.Process(workers.process.pid).children()


@pytest.fixture
def fast_lease() -> tuple[str, ...]:
    return ("--heartbeat-interval", "0.2", "--heartbeat-ttl", "1.5")


def test_chaos_killing_workers_loses_nothing_and_records_each_key_once(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], fast_lease: tuple[str, ...]
) -> None:
    workers = cli_workers(3, *fast_lease)
    dsk, root = tree(500, 0.02)
    expected = dask.get(dsk, root)
    kills: list[int] = []
    stop = threading.Event()

    def chaos() -> None:
        rng = random.Random(7)
        while len(kills) < 5 and not stop.wait(rng.uniform(0.1, 0.4)):
            children = worker_children(workers)
            if children:
                victim = rng.choice(children)
                victim.kill()
                kills.append(victim.pid)

    counter = CountCompletions()
    thread = threading.Thread(target=chaos)
    started = time.monotonic()
    with counter:
        thread.start()
        try:
            result = manager(dsk, root)
        finally:
            stop.set()
            thread.join()
    assert result == expected
    assert time.monotonic() - started < 60
    assert len(kills) >= 3, kills  # the run lasted long enough for the chaos to bite
    tasks_in_graph = {k for k in dsk}
    assert set(counter.counts) == tasks_in_graph
    assert set(counter.counts.values()) == {1}  # every completion recorded exactly once


@pytest.mark.parametrize("point", ["claimed", "executed", "completed"])
def test_sigkill_at_each_step_of_a_task(
    point: str,
    manager: RedisParam,
    redis_address: RedisAddress,
    jobname: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_lease: tuple[str, ...],
) -> None:
    monkeypatch.setenv("REDISPARAM_TEST_KILL_AT", f"{point}:{tmp_path / 'fired'}")
    workers = CliWorkers(redis_address, jobname, 2, *fast_lease)
    try:
        wait_for_workers(redis_address, jobname, 2)
        counter = CountCompletions()
        dsk = {("t", i): (tasks.slow_inc, i, 0.01) for i in range(40)}
        with counter:
            assert manager(dsk, list(dsk)) == tuple(range(1, 41))
        assert (tmp_path / "fired").exists()  # the hook killed a worker
        assert set(counter.counts.values()) == {1} and len(counter.counts) == 40
    finally:
        workers.stop()
        workers.log.close()


@pytest.mark.parametrize("allowed", [0, 3])
def test_a_task_that_always_crashes_gives_killed_worker(url_param: Callable[..., RedisParam], allowed: int) -> None:
    with url_param(2, allowed_failures=allowed) as param:
        with pytest.raises(KilledWorker, match=rf"task 'doom'.*{allowed + 1} worker\(s\).*allowed_failures={allowed}"):
            param({"doom": (tasks.always_exit,)}, "doom")
        assert param({"x": (tasks.inc, 1)}, "x") == 2


def test_sys_exit_in_a_task_counts_as_a_crash(url_param: Callable[..., RedisParam]) -> None:
    with url_param(1, allowed_failures=1) as param:
        with pytest.raises(KilledWorker, match="task 'bye'"):
            param({"bye": (tasks.sys_exit,)}, "bye")


def test_timeout_stops_code_stuck_in_c(url_param: Callable[..., RedisParam]) -> None:
    with url_param(2, timeout=1) as param:
        started = time.monotonic()
        with pytest.raises(TaskTimeout, match=r"task 'stuck' ran longer than timeout=1 s") as info:
            param({"stuck": (tasks.stuck_in_c, 10), "fine": (tasks.inc, 1)}, ["stuck", "fine"])
        assert time.monotonic() - started < 3
        assert isinstance(info.value, TimeoutError)
        assert param({"x": (tasks.inc, 1)}, "x") == 2  # the next compute works (the worker was replaced)


def test_timeout_interrupts_python_code_without_killing_the_worker(url_param: Callable[..., RedisParam]) -> None:
    with url_param(1, timeout=0.5) as param:
        pids = {param({"p": (tasks.getpid,)}, "p")}
        with pytest.raises(TaskTimeout, match="'spin'"):
            param({"spin": (tasks.python_loop, 5)}, "spin")
        pids.add(param({"q": (tasks.getpid,)}, "q"))
        assert len(pids) == 1  # the same worker process survived


def test_retries_rerun_a_task_that_raised(url_param: Callable[..., RedisParam], tmp_path: pathlib.Path) -> None:
    with url_param(1) as param:
        counter = str(tmp_path / "count")
        assert param({"r": (tasks.fail_first_times, counter, 2)}, "r", retries=2) == 3
        with pytest.raises(ValueError, match="attempt 1 fails"):
            param({"r": (tasks.fail_first_times, str(tmp_path / "other"), 2)}, "r")
    with url_param(1, retries=3) as param:
        assert param({"r": (tasks.fail_first_times, str(tmp_path / "third"), 3)}, "r") == 4


def test_retries_from_annotations(url_param: Callable[..., RedisParam], tmp_path: pathlib.Path) -> None:
    with dask.annotate(retries=2):
        value = dask.delayed(tasks.fail_first_times)(str(tmp_path / "count"), 2)
    with url_param(1) as param:
        assert value.compute(scheduler=param) == 3


def test_stopped_worker_is_reaped_and_its_late_result_dropped(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], fast_lease: tuple[str, ...]
) -> None:
    first = cli_workers(1, *fast_lease)
    result: list[Any] = []
    compute = threading.Thread(target=lambda: result.append(manager({"t": (tasks.sleep_then_pid, 1.0)}, "t")))
    compute.start()
    time.sleep(0.4)
    (stopped,) = worker_children(first)
    stopped.suspend()  # SIGSTOP, past its lease
    try:
        second = cli_workers(1, *fast_lease, wait=False)
        compute.join(30)
        assert len(result) == 1
        assert result[0] in {p.pid for p in worker_children(second)}
    finally:
        stopped.resume()  # SIGCONT: its late result must be dropped
    time.sleep(1.5)
    counter = CountCompletions()
    with counter:
        assert manager({"u": (tasks.inc, 1)}, "u") == 2
    assert counter.counts == {"u": 1}


def test_manager_killed_mid_run(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers], rclient: Any
) -> None:
    import subprocess

    from dask_redisparam.backend import keys

    cli_workers(2)
    url = redis_address.to_url(show_password=True)
    proc = start_manager_process(redis_address, jobname, 100)
    assert proc.stdout is not None
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    runs_before = {keys.run_id_of(k.decode()) for k in rclient.scan_iter(match=keys.runs_pattern(jobname))}
    assert len(runs_before) == 1  # the dead manager's run is still there
    with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
        assert param({("t", i): (tasks.inc, i) for i in range(20)}, [("t", i) for i in range(20)]) == tuple(
            range(1, 21)
        )
    rclient.delete(*[keys.alive(jobname, r) for r in runs_before if r])  # as if its lease had run out
    done = subprocess.run(
        ["dask-redisparam", "clean", "--jobname", jobname, "--url", url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert list(rclient.scan_iter(match=keys.runs_pattern(jobname))) == []

"""Mixed faults in one run: killed workers, a worker stopped past its lease, a Redis restart and a garbage queue
entry, all in the same 20 rounds; every round exact, every key recorded once, nothing left behind."""

from __future__ import annotations

import contextlib
import pathlib
import random
import secrets
import threading
import time
from collections.abc import Hashable
from typing import Any

import dask
import psutil
import pytest
import redis

from dask_redisparam import EmbeddedRedis, RedisParam
from dask_redisparam.backend import keys
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers
from tests.test_faults import CountCompletions

ROUNDS = 20
ROUND_LIMIT = 45.0
"""Seconds a round may take, faults included (a SIGSTOP past the lease costs the lease, a restart a reconnect)."""


def graph(round_no: int) -> tuple[dict[Hashable, Any], Hashable]:
    """About 300 tasks: 264 sleeping leaves reduced by sums of 8 (a fresh name per round)."""
    leaves = [(f"leaf-{round_no}", i) for i in range(264)]
    dsk: dict[Hashable, Any] = {key: (tasks.sleep_leaf, key[1], 0.01) for key in leaves}
    level, names = 0, list(leaves)
    while len(names) > 1:
        level += 1
        groups = [names[i : i + 8] for i in range(0, len(names), 8)]
        names = [(f"sum-{round_no}-{level}", j) for j in range(len(groups))]
        for name, group in zip(names, groups, strict=True):
            dsk[name] = (tasks.sum_all, *group)
    return dsk, names[0]


class Chaos:
    """Injects one round's faults from a thread, at random moments, into the workers and the server."""

    def __init__(self, workers: CliWorkers, server: EmbeddedRedis, jobname: str, seed: int) -> None:
        self.workers, self.server, self.jobname = workers, server, jobname
        self.rng = random.Random(seed)
        self.log: list[str] = []
        self.pending: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.workers.process.pid).children()
        except (psutil.NoSuchProcess, ProcessLookupError):
            return []

    def start(self, faults: list[str]) -> None:
        """Inject ``faults`` (and those a shorter round left over) in order, each after a random pause."""
        self._stop.clear()
        self.pending = [*self.pending, *faults]
        self._thread = threading.Thread(target=self._inject)
        self._thread.start()

    def join(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _inject(self) -> None:
        while self.pending:
            if self._stop.wait(self.rng.uniform(0.02, 0.3)):
                return  # the round ended first: what is left goes into the next one
            getattr(self, self.pending.pop(0))()

    def kill(self) -> None:
        children = self.children()
        if children:
            victim = self.rng.choice(children)
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):  # it may have just exited
                victim.kill()
                self.log.append(f"kill {victim.pid}")

    def stop_past_lease(self) -> None:
        children = self.children()
        if children:
            victim = self.rng.choice(children)
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                victim.suspend()
                self.log.append(f"stop {victim.pid}")
                self._stop.wait(2.5)  # the lease is 1.5 s: reaped meanwhile; its late result must be dropped
                victim.resume()

    def restart_redis(self) -> None:
        self.server.kill()
        time.sleep(0.3)
        self.server.restart()
        self.log.append("restart redis")

    def garbage(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.server.address.port, password=self.server.address.password)
        try:
            client.lpush(keys.queue(self.jobname), b"\x80garbage, not a task message")
        finally:
            client.close()
        self.log.append("garbage")


def plan(round_no: int) -> list[str]:
    """Every round kills a worker; every fourth stops one past its lease; round 7 restarts Redis, 12 pushes garbage."""
    faults = ["kill"]
    if round_no % 4 == 1:
        faults.append("stop_past_lease")
    if round_no == 7:
        faults.append("restart_redis")
    if round_no == 12:
        faults.append("garbage")
    if round_no == ROUNDS - 1:
        faults.clear()  # the last round runs clean: every fault has happened before it ends
    return faults


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_twenty_rounds_of_mixed_faults_are_exact(tmp_path: pathlib.Path) -> None:
    jobname = "chaos-" + secrets.token_hex(4)
    with EmbeddedRedis(tcp=True, appendonly=True, dir=str(tmp_path)) as server:
        workers = CliWorkers(server.address, jobname, 3, "--heartbeat-interval", "0.2", "--heartbeat-ttl", "1.5")
        chaos = Chaos(workers, server, jobname, seed=12)
        try:
            wait_for_workers(server.address, jobname, 3)
            with RedisParam(jobname=jobname, is_worker=False, url=server.url, allowed_failures=50) as param:
                for round_no in range(ROUNDS):
                    dsk, root = graph(round_no)
                    expected = dask.get(dsk, root)
                    counter = CountCompletions()
                    started = time.monotonic()
                    chaos.start(plan(round_no))
                    try:
                        with counter:
                            result = param(dsk, root)
                    finally:
                        chaos.join()
                    took = time.monotonic() - started
                    assert result == expected, (round_no, chaos.log)
                    assert took < ROUND_LIMIT, (round_no, took, chaos.log)
                    assert set(counter.counts) == set(dsk), round_no
                    assert set(counter.counts.values()) == {1}, (round_no, chaos.log)  # each key recorded once
            assert workers.process.poll() is None, workers.stderr()  # the pool is still up: no crash loop
            assert sum(line.startswith("kill") for line in chaos.log) >= ROUNDS // 2, chaos.log
            assert "restart redis" in chaos.log and "garbage" in chaos.log, chaos.log
        finally:
            workers.stop()
            workers.log.close()
        client = redis.Redis(host="127.0.0.1", port=server.address.port, password=server.address.password)
        try:
            left = {k.decode() for k in client.scan_iter(match=keys.job_pattern(jobname))}
            assert left <= documented_leftovers(jobname), left
            assert client.lrange(keys.dead(jobname), 0, -1) == [b"\x80garbage, not a task message"]
        finally:
            client.close()


def documented_leftovers(jobname: str) -> set[str]:
    """What a job may keep after its runs ended and its workers stopped: the dead letters (and their reasons), its
    statistics (counters, task events)."""
    return {keys.dead(jobname), keys.rejected(jobname), *keys.statistics(jobname)}

"""Fixtures shared by the whole test suite: one real redis-server per session, on a private Unix socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend, keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker.server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A started redis-server for the session; a missing binary is an error (ServerError), never a skip."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_address(redis_server: EmbeddedRedis) -> RedisAddress:
    return redis_server.address


@pytest.fixture
def jobname() -> str:
    """A job name unique to the test, so that tests sharing the server never see each other's keys."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def rclient(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(unix_socket_path=redis_server.socket_path, password=redis_server.address.password)
    try:
        yield client
    finally:
        client.close()


class CliWorkers:
    """``dask-redisparam-worker`` running in a subprocess, stopped (warm, then killed) at teardown."""

    def __init__(self, address: RedisAddress, jobname: str, nworkers: int = 1, *extra: str) -> None:
        env = dict(os.environ, REDISPARAM_URL=address.to_url(show_password=True))
        env.pop("REDISPARAM_JOBNAME", None)
        argv = ["dask-redisparam-worker", "--jobname", jobname, "--nworkers", str(nworkers), *extra]
        self.nworkers = nworkers
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(argv, env=env, stderr=self.log)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stderr(self) -> str:
        """The worker's log output (after :meth:`stop`)."""
        self.log.seek(0)
        return self.log.read()


def left_keys(client: redis.Redis, jobname: str) -> list[bytes]:
    """The job's keys in Redis but its statistics (its counters and task events, kept with a TTL on purpose:
    ``keys.statistics``)."""
    kept = {k.encode() for k in keys.statistics(jobname)}
    return [k for k in client.scan_iter(match=keys.job_pattern(jobname)) if k not in kept]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true (then True) or ``timeout`` seconds pass (then False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_for_workers(address: RedisAddress, jobname: str, n: int, timeout: float = 30.0) -> list[str]:
    """Wait until ``n`` workers serve ``jobname``; return their ids."""
    backend = Backend.connect(address)
    try:
        deadline = time.monotonic() + timeout
        while True:
            ids = backend.live_workers(jobname)
            if len(ids) >= n:
                return ids
            assert time.monotonic() < deadline, f"only {len(ids)} of {n} workers started for {jobname}"
            time.sleep(0.05)
    finally:
        backend.close()


@pytest.fixture
def cli_workers(redis_address: RedisAddress, jobname: str) -> Iterator[Callable[..., CliWorkers]]:
    """Start ``dask-redisparam-worker`` subprocesses on the test's job; waits until they registered."""
    started: list[CliWorkers] = []

    def start(nworkers: int = 1, *extra: str, wait: bool = True) -> CliWorkers:
        workers = CliWorkers(redis_address, jobname, nworkers, *extra)
        started.append(workers)
        if wait:
            wait_for_workers(redis_address, jobname, nworkers + sum(w.nworkers for w in started[:-1]))
        return workers

    yield start
    for workers in started:
        workers.stop()
        workers.log.close()


@pytest.fixture
def manager(redis_address: RedisAddress, jobname: str) -> Iterator[RedisParam]:
    """A started manager-only param on the test's job (serve it with ``cli_workers``)."""
    with RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True)) as param:
        yield param


@pytest.fixture
def url_param(redis_address: RedisAddress, jobname: str) -> Callable[..., RedisParam]:
    """Make a RedisParam with local workers on the test's server and job: ``url_param(2, timeout=1)``."""

    def make(workers: int, **kwargs: object) -> RedisParam:
        return RedisParam(workers, jobname=jobname, url=redis_address.to_url(show_password=True), **kwargs)

    return make


MANAGER_SCRIPT = """
import sys
from dask_redisparam import RedisParam
from tests import tasks
p = RedisParam(jobname=sys.argv[1], is_worker=False, url=sys.argv[2]).start()
print("started", flush=True)
try:
    n = int(sys.argv[3])
    p({("s", i): (tasks.sleep_leaf, i, 0.2) for i in range(n)}, [("s", i) for i in range(n)])
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def start_manager_process(address: RedisAddress, jobname: str, ntasks: int) -> subprocess.Popen[str]:
    """A manager in a subprocess computing ``ntasks`` tasks of 0.2 s; returns once its run has started."""
    url = address.to_url(show_password=True)
    argv = [sys.executable, "-c", MANAGER_SCRIPT, jobname, url, str(ntasks)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    return proc

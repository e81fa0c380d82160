"""Every error reply a user can get from Redis is a ``RedisParamError`` that names the server and says what to do:
``READONLY`` (a replica), ``LOADING`` (a server loading its dataset: waited through), ``MISCONF`` (a failed RDB
snapshot). ``OOM`` and ``NOPERM`` have files of their own (``test_redis_full.py``, ``test_acl_commands.py``). Only
``dask_redisparam/backend/`` sees redis-py, and every public operation of the backend names its errors."""

from __future__ import annotations

import inspect
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dask_redisparam import PersistenceFailed, RedisParam, ServerLoading, ServerReadOnly
from dask_redisparam.backend import Backend
from dask_redisparam.manager import loop as manager
from dask_redisparam.worker.server import EmbeddedRedis, find_redis_server
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers

PACKAGE = Path(__file__).resolve().parents[1] / "dask_redisparam"
PASSWORD = "pw-" + secrets.token_hex(8)


def _client(server: EmbeddedRedis, **kwargs: Any) -> redis.Redis:
    if server.port is not None:
        return redis.Redis(host="127.0.0.1", port=server.port, password=server.address.password, **kwargs)
    return redis.Redis(unix_socket_path=server.socket_path, password=server.address.password, **kwargs)


def _exit_log(workers: CliWorkers) -> tuple[int, str]:
    try:
        code = workers.process.wait(30)
    finally:
        workers.stop()
    log = workers.stderr()
    workers.log.close()
    return code, log


# ------------------------------------------------------------------------------------------------ the boundary
def test_only_the_backend_sees_redis_py() -> None:
    backend = PACKAGE / "backend"
    checked = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if backend in path.parents:
            continue
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE).as_posix()
        assert "redis.exceptions" not in source, name
        assert not re.search(r"^\s*(import redis\b|from redis\b)", source, re.M), name
        checked.append(name)
    assert {
        "manager/loop.py",
        "worker/loop.py",
        "param.py",
        "cli/worker.py",
        "manager/state.py",
        "worker/supervisor.py",
    } <= set(checked)


def test_every_public_backend_operation_names_its_errors() -> None:
    names = [name for name in dir(Backend) if not name.startswith("_")]
    assert {"exchange", "complete_and_claim", "read_parts", "open_run", "claim", "check_job_access"} <= set(names)
    for name in names:
        attr = inspect.getattr_static(Backend, name)
        if callable(attr) and not isinstance(attr, classmethod):
            assert hasattr(attr, "__wrapped__"), f"Backend.{name} does not translate redis-py's errors"


# ------------------------------------------------------------------------------------------------ READONLY
@pytest.fixture(scope="module")
def replica() -> Iterator[EmbeddedRedis]:
    """A replica of a primary (both on TCP, with a password)."""
    with EmbeddedRedis(tcp=True, password=PASSWORD) as primary, EmbeddedRedis(tcp=True, password=PASSWORD) as rep:
        admin = _client(rep)
        admin.config_set("masterauth", PASSWORD)
        admin.replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 20
        while admin.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        admin.close()
        yield rep


def _check_readonly(error: BaseException, server: EmbeddedRedis) -> None:
    message = str(error)
    assert f"Redis at 127.0.0.1:{server.port} is a read-only replica (READONLY)" in message, message
    assert "connect to its primary" in message and PASSWORD not in message, message


def test_a_replica_is_refused_at_start(replica: EmbeddedRedis, jobname: str) -> None:
    param = RedisParam(jobname=jobname, is_worker=False, url=replica.url)
    started = time.monotonic()
    with pytest.raises(ServerReadOnly) as info:
        param.start()
    assert time.monotonic() - started < 2.0 and not param.is_up
    _check_readonly(info.value, replica)
    code, log = _exit_log(CliWorkers(replica.address, jobname, 1, "--no-restart"))
    assert code != 0 and "is a read-only replica (READONLY)" in log and "Traceback" not in log, log


def test_operations_on_a_replica(replica: EmbeddedRedis, jobname: str) -> None:
    backend = Backend.connect(replica.address)
    try:
        with pytest.raises(ServerReadOnly) as info:  # a Lua script
            backend.register_worker(jobname, "w1", {"host": "h"}, 10.0)
        _check_readonly(info.value, replica)
        with pytest.raises(ServerReadOnly):  # a pipeline
            backend.exchange(jobname, "r1", [b"message"], [], 10.0)
        with pytest.raises(ServerReadOnly):  # the socket path of large values
            backend.open_run(jobname, "r1", 10.0, {}, [("r1:p0", memoryview(b"x" * 100))])
        assert backend.queue_length(jobname) == 0  # reading works
    finally:
        backend.close()


def test_a_worker_waits_through_a_failover(jobname: str) -> None:
    """Its server becomes a replica (a failover), then a primary again: the worker waits, then serves."""
    with EmbeddedRedis(tcp=True, password=PASSWORD) as server, EmbeddedRedis(tcp=True, password=PASSWORD) as other:
        admin = _client(server)
        workers = CliWorkers(server.address, jobname, 1)
        try:
            wait_for_workers(server.address, jobname, 1)
            with RedisParam(jobname=jobname, is_worker=False, url=server.url) as param:
                assert param.map(tasks.inc, range(3)) == [1, 2, 3]
                admin.config_set("masterauth", PASSWORD)
                admin.replicaof("127.0.0.1", other.port)  # its blocked claim is cut (UNBLOCKED), writes refused
                time.sleep(2.5)
                assert workers.process.poll() is None
                admin.replicaof("NO", "ONE")
                assert param.map(tasks.inc, range(3)) == [1, 2, 3]
        finally:
            code = workers.stop()
            admin.close()
        log = workers.stderr()
        workers.log.close()
        assert code == 0, log
        # it waits in its claim, or (a completion in flight when the server turned replica) retries its report
        waited = "; waiting" in log or "; retrying" in log
        assert "is a read-only replica (READONLY)" in log and waited and "Traceback" not in log, log


# ------------------------------------------------------------------------------------------------ MISCONF
def test_writes_refused_after_a_failed_snapshot(tmp_path: Path, jobname: str) -> None:
    rdb_dir = tmp_path / "rdb"
    with EmbeddedRedis(dir=rdb_dir, extra_args=["--save", "3600", "1"]) as server:
        admin = _client(server)
        workers = CliWorkers(server.address, jobname, 1)
        try:
            wait_for_workers(server.address, jobname, 1)
            with RedisParam(jobname=jobname, is_worker=False, url=server.url) as param:
                assert param.map(tasks.inc, range(3)) == [1, 2, 3]
                rdb_dir.rmdir()  # the server's working directory: its snapshots cannot be written any more
                admin.bgsave()
                deadline = time.monotonic() + 10
                while admin.info("persistence")["rdb_last_bgsave_status"] != "err":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                with pytest.raises(PersistenceFailed) as info:
                    param.map(tasks.inc, range(3))
                message = str(info.value)
                where = server.address.describe()
                assert f"Redis at {where} refuses writes because its last RDB snapshot failed (MISCONF" in message
                assert "stop-writes-on-bgsave-error" in message and "server's log" in message, message
                with pytest.raises(PersistenceFailed):
                    RedisParam(jobname=jobname, is_worker=False, url=server.url).start()
                time.sleep(1.5)
                assert workers.process.poll() is None  # it waits for the server
                admin.config_set("stop-writes-on-bgsave-error", "no")
                assert param.map(tasks.inc, range(3)) == [1, 2, 3]
        finally:
            code = workers.stop()
            admin.config_set("save", "")  # else it would refuse to shut down (its last save fails)
            admin.close()
        log = workers.stderr()
        workers.log.close()
        assert code == 0, log
        assert "refuses writes because its last RDB snapshot failed" in log and "Traceback" not in log, log


# ------------------------------------------------------------------------------------------------ LOADING
def _redis7() -> str:
    """A redis-server of version 7 or newer: its hidden settings make a load last as long as a test needs."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server"), find_redis_server()):
        if candidate:
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10).stdout
            found = re.search(r"v=(\d+)\.", out)
            if found and int(found.group(1)) >= 7:
                return candidate
    raise AssertionError("these tests need redis-server 7 or newer (e.g. apt install redis-server)")


@pytest.fixture
def loading_server() -> Iterator[EmbeddedRedis]:
    # values of 2 KB, uncompressed, and events processed every KB: the server answers (LOADING) between two keys
    extra = [
        "--enable-debug-command",
        "yes",
        "--loading-process-events-interval-bytes",
        "1024",
        "--rdbcompression",
        "no",
    ]
    with EmbeddedRedis(executable=_redis7(), extra_args=extra) as server:
        yield server


class _Reload:
    """``DEBUG RELOAD`` in a thread, made to last ``seconds`` (the server answers LOADING meanwhile)."""

    def __init__(self, server: EmbeddedRedis, seconds: float, keys: int = 1000) -> None:
        admin = _client(server)
        pipe = admin.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(f"filler:{i}", b"x" * 2000)
        pipe.execute()
        admin.config_set("key-load-delay", int(seconds * 1e6 / keys))  # microseconds per key
        admin.close()
        self.client = _client(server, socket_timeout=60)
        self.thread = threading.Thread(target=lambda: self.client.execute_command("DEBUG", "RELOAD"))
        probe = _client(server, retry=Retry(NoBackoff(), 0))
        self.thread.start()
        deadline = time.monotonic() + 10
        while True:  # until the server answers LOADING
            try:
                probe.ping()
            except redis.exceptions.BusyLoadingError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        probe.close()

    def join(self) -> None:
        self.thread.join(60)
        self.client.close()


def test_a_run_waits_while_the_server_loads(loading_server: EmbeddedRedis, jobname: str) -> None:
    workers = CliWorkers(loading_server.address, jobname, 2)
    out: list[Any] = []
    try:
        wait_for_workers(loading_server.address, jobname, 2)
        with RedisParam(jobname=jobname, is_worker=False, url=loading_server.url) as param:
            dsk: dict[Any, Any] = {("s", i): (tasks.slow_inc, i, 0.1) for i in range(40)}
            thread = threading.Thread(target=lambda: out.append(param(dsk, list(dsk), fuse_chains=False)))
            thread.start()
            time.sleep(0.5)
            reload = _Reload(loading_server, 2.0)  # shorter than the run's lease (4 s)
            reload.join()
            thread.join(60)
    finally:
        code = workers.stop()
    log = workers.stderr()
    workers.log.close()
    assert [list(x) for x in out] == [[i + 1 for i in range(40)]]
    assert code == 0 and "Traceback" not in log, log
    assert "is loading its dataset into memory (LOADING" in log, log


def test_a_load_that_lasts_fails_the_run_naming_it(
    loading_server: EmbeddedRedis, jobname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "OUTAGE_GRACE", 1.0)
    out: list[Any] = []
    with RedisParam(jobname=jobname, is_worker=False, url=loading_server.url) as param:  # no worker: it waits
        thread = threading.Thread(target=lambda: out.append(_outcome(param, {"x": (tasks.inc, 1)})), daemon=True)
        thread.start()
        time.sleep(0.5)
        reload = _Reload(loading_server, 5.0)
        thread.join(30)
        reload.join()
    (error,) = out
    assert isinstance(error, ServerLoading), error
    where = loading_server.address.describe()
    assert f"Redis at {where} was still loading its dataset after 1 s" in str(error), error


def _outcome(param: RedisParam, dsk: dict[Any, Any]) -> Any:
    try:
        return param(dsk, list(dsk))
    except Exception as e:
        return e


def test_starting_while_the_server_loads(loading_server: EmbeddedRedis, jobname: str) -> None:
    backend = Backend.connect(loading_server.address)
    reload = _Reload(loading_server, 4.0)
    try:
        started = time.monotonic()
        with pytest.raises(ServerLoading) as info:
            RedisParam(jobname=jobname, is_worker=False, url=loading_server.url).start()
        assert time.monotonic() - started < 3.0
        where = loading_server.address.describe()
        assert f"Redis at {where} is loading its dataset into memory (LOADING" in str(info.value)
        with pytest.raises(ServerLoading):  # the socket path of large values
            backend.read_parts(jobname, "r1", [("p0", memoryview(bytearray(10)))])
        with pytest.raises(ServerLoading):
            backend.queue_length(jobname)
        reload.join()
        assert backend.queue_length(jobname) == 0
    finally:
        reload.join()
        backend.close()

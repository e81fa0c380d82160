"""The durable local mode (``RedisParam(durable=True)``): a detached embedded server with an append-only file and
its workers outlive the process that started them, the next process reattaches, ``dask-redisparam server
status|stop`` manage them, they stop themselves when idle, and a stale state directory starts again on its
append-only file. Real processes throughout; the state directories are temporary ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import dask.array as da
import numpy as np
import pytest
import redis
from click.testing import CliRunner

from dask_redisparam import ConfigurationError, RedisParam, ServerError, Settings
from dask_redisparam.cli import main
from dask_redisparam.worker import durable
from tests.conftest import wait_until


@pytest.fixture
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh state directory (short enough for a socket path); whatever runs in it is stopped at the end."""
    path = str(tmp_path_factory.mktemp("st") / "state")
    yield path
    if os.path.isdir(path):
        durable.stop_durable(path, timeout=10.0)


def worker_pids(p: RedisParam) -> list[int]:
    return [int(f["pid"]) for f in p.backend.worker_records(p.settings.jobname).values()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def all_pids(record: durable.DurableServer, workers: list[int]) -> list[int]:
    return [record.keeper, record.server, record.supervisor, *workers]


STARTER = textwrap.dedent(
    """
    import sys, time
    from dask_redisparam import RedisParam
    p = RedisParam(2, durable=True, state_dir=sys.argv[1]).start()
    print("ready", p.durable_server.server, flush=True)
    time.sleep(60)
    """
)


def test_the_server_and_workers_outlive_killed_starters_and_the_next_process_reattaches(state_dir: str) -> None:
    # two starters at once: the lock lets one start the server, the other reattaches to it
    starters = [
        subprocess.Popen([sys.executable, "-c", STARTER, state_dir], stdout=subprocess.PIPE, text=True) for _ in "ab"
    ]
    try:
        said = [starter.stdout.readline().split() for starter in starters if starter.stdout is not None]
        assert [words[:1] for words in said] == [["ready"], ["ready"]], said
        assert said[0][1] == said[1][1], "two starters started two servers"
        server_pid = int(said[0][1])
        with open(os.path.join(state_dir, "secret")) as fh:
            secret = fh.read()
        for starter in starters:
            starter.send_signal(signal.SIGKILL)
    finally:
        for starter in starters:
            starter.kill()
            starter.wait()
            if starter.stdout is not None:
                starter.stdout.close()
    assert wait_until(lambda: not any(durable.pid_alive(s.pid) for s in starters), 5)
    record = durable.read_record(state_dir)
    assert record is not None and record.server == server_pid
    assert all(durable.pid_alive(pid) for pid in (record.keeper, record.server, record.supervisor))
    assert oct(os.stat(state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(state_dir, "secret")).st_mode & 0o777) == "0o600"

    with RedisParam(durable=True, state_dir=state_dir) as p:  # another process (this one) reattaches
        attached = p.durable_server
        assert attached is not None and attached.reattached and attached.server == server_pid
        assert p.settings.jobname == "durable"
        x = da.arange(40, chunks=5)
        assert int((x * 2).sum().compute(scheduler=p)) == int((np.arange(40) * 2).sum())
        workers = worker_pids(p)
        assert len(workers) == 2
    with open(os.path.join(state_dir, "secret")) as fh:
        assert fh.read() == secret  # the same secret: signed values written before stay readable
    assert all(durable.pid_alive(pid) for pid in all_pids(record, workers))  # leaving the block only detached

    hidden = [secret.strip().split("=", 1)[1], durable.password_of(secret.strip())]
    for pid in all_pids(record, workers):  # neither the secret nor the password on a command line, nor in a log
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            assert not any(word.encode() in fh.read() for word in hidden), pid
    for log in ("keeper.log", "redis.log"):
        with open(os.path.join(state_dir, log)) as fh:
            assert not any(word in fh.read() for word in hidden), log

    os.kill(server_pid, signal.SIGSTOP)  # a server that does not answer (loading, a loaded machine) is not replaced
    try:
        with pytest.raises(ServerError, match=f"redis-server pid {server_pid}\\) does not answer"):
            RedisParam(durable=True, state_dir=state_dir, start_timeout=1).start()
        assert durable.read_record(state_dir) == record
    finally:
        os.kill(server_pid, signal.SIGCONT)
    assert durable.pid_alive(server_pid)

    with pytest.raises(ConfigurationError, match="serves job 'durable', not jobname='other'"):
        RedisParam(durable=True, state_dir=state_dir, jobname="other").start()

    runner = CliRunner()
    status = runner.invoke(main, ["server", "status", "--state-dir", state_dir])
    assert status.exit_code == 0, status.output
    assert f"redis-server pid {server_pid}" in status.output and "AOF on" in status.output
    assert f"socket {record.socket}" in status.output and "2 live worker(s) of 2" in status.output
    assert not any(word in status.output for word in hidden)
    stop = runner.invoke(main, ["server", "stop", "--state-dir", state_dir])
    assert stop.exit_code == 0, stop.output
    assert "append-only file kept" in stop.output
    left = {pid: cmdline(pid) for pid in all_pids(record, workers) if durable.pid_alive(pid)}
    assert not left, f"still running after server stop: {left}"
    assert not os.path.exists(os.path.join(state_dir, "server.json"))
    assert not os.path.exists(record.socket)
    assert os.path.exists(os.path.join(state_dir, "appendonly.aof"))
    gone = runner.invoke(main, ["server", "status", "--state-dir", state_dir])
    assert gone.exit_code == 1 and "no durable server runs" in gone.output


def test_a_stale_state_dir_starts_again_on_its_append_only_file_and_an_idle_one_stops(state_dir: str) -> None:
    p = RedisParam(1, durable=True, state_dir=state_dir).start()
    try:
        first = p.durable_server
        assert first is not None
        address = p.backend.address
        client = redis.Redis(unix_socket_path=address.path, password=address.password)
        client.hset("drp:{durable}:kept-by-the-aof", "v", "42")
        client.close()
    finally:
        p.stop()
    os.kill(first.server, signal.SIGKILL)  # a crash: nothing is written out, the record and socket stay
    os.kill(first.keeper, signal.SIGKILL)
    assert durable.read_record(state_dir) == first  # stale: the next start waits for what is left, then replaces it

    p = RedisParam(1, durable=True, state_dir=state_dir, durable_idle=0.5).start()
    try:
        second = p.durable_server
        assert second is not None and not second.reattached and second.server != first.server
        address = p.backend.address
        client = redis.Redis(unix_socket_path=address.path, password=address.password)
        assert client.hget("drp:{durable}:kept-by-the-aof", "v") == b"42"
        client.delete("drp:{durable}:kept-by-the-aof")
        client.close()
        assert int(da.ones(6, chunks=3).sum().compute(scheduler=p)) == 6
        pids = all_pids(second, worker_pids(p))
        assert wait_until(lambda: not any(durable.pid_alive(pid) for pid in pids), 15), "still running after idle"
        assert durable.read_record(state_dir) is None
        assert int(da.ones(10, chunks=5).sum().compute(scheduler=p)) == 10  # a param still started starts it again
        third = p.durable_server
        assert third is not None and third.server != second.server and third.alive()
    finally:
        p.stop()


def test_a_state_dir_that_others_may_enter_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("open")
    os.chmod(path, 0o755)
    with pytest.raises(ConfigurationError, match=f"state_dir='{path}' is accessible to its group or others"):
        RedisParam(1, durable=True, state_dir=path).start()
    assert not os.path.exists(path / "secret")


def test_the_durable_settings() -> None:
    assert Settings(durable=True, environ={}).jobname == "durable"
    assert Settings(durable=True, jobname="mine", environ={}).jobname == "mine"
    assert Settings(environ={}).jobname != "durable"
    assert Settings(durable=True, state_dir="~/x", environ={}).state_dir == os.path.expanduser("~/x")
    with pytest.raises(ConfigurationError, match="durable_idle=0 must be a number > 0"):
        Settings(durable_idle=0, environ={})
    with pytest.raises(ConfigurationError, match="a server is configured"):
        RedisParam(1, durable=True, url="redis://127.0.0.1:1").start()

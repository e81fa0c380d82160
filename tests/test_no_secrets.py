"""The Redis password and the signing secret never show: not in logs, reprs, error messages, the commands' output,
nor in the command lines (``/proc/<pid>/cmdline``) of the processes the package starts.

Everything a user could see is collected while a password-protected server and a signed job run, then searched.
The environment of the workers holds both on purpose (that is how they get them); it is not searched.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dask_redisparam import RedisParam, rpalive
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.settings import Settings
from dask_redisparam.errors import RedisParamError
from dask_redisparam.wire.signing import SECRET_ENV, Signer
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks

PASSWORD = "pw" + secrets.token_hex(16)
WRONG = "wrong" + secrets.token_hex(16)
SECRET = "sk" + secrets.token_hex(20)
SHORT_SECRET = "sh" + secrets.token_hex(3)
HIDDEN = {"password": PASSWORD, "wrong password": WRONG, "secret": SECRET, "short secret": SHORT_SECRET}


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tcp=True, password=PASSWORD) as running:
        yield running


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Our environment without any server or secret setting, plus the job's secret."""
    for name in list(os.environ):
        if name.startswith(("REDISPARAM_", "REDIS_", "DASK_REDISPARAM")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return dict(os.environ)


class Seen:
    """Every text a user could see, with where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, str(text)))

    def error(self, where: str, call: object) -> BaseException:
        """Call ``call()``, which must raise; keep the message (with its chain) and return the exception."""
        assert callable(call)
        with pytest.raises((RedisParamError, ValueError)) as info:
            call()
        exc: BaseException | None = info.value
        while exc is not None:
            self.add(f"{where}: {type(exc).__name__}", f"{exc!s} {exc!r}")
            exc = exc.__cause__ or exc.__context__
        return info.value

    def assert_clean(self) -> None:
        leaks = [(where, name) for where, text in self.texts for name, word in HIDDEN.items() if word in text]
        assert not leaks, f"secrets shown in: {leaks}"


def _cmdlines() -> dict[int, str]:
    """The command line of every live descendant of this process (worker supervisors, workers, servers)."""
    out = {}
    for child in psutil.Process().children(recursive=True):
        try:
            out[child.pid] = Path(f"/proc/{child.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


def test_no_secret_is_ever_shown(
    server: EmbeddedRedis,
    environ: dict[str, str],
    jobname: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = Seen()
    address = server.address
    assert address.password == PASSWORD
    url = address.to_url(show_password=True)
    wrong_url = RedisAddress(host="127.0.0.1", port=server.port or 0, password=WRONG).to_url(show_password=True)
    seen.add("repr(EmbeddedRedis)", repr(server))
    seen.add("repr(RedisAddress)", repr(address))
    seen.add("str(RedisAddress)", str(address))
    seen.add("RedisAddress.to_url()", address.to_url())
    seen.add("RedisAddress.describe()", address.describe())

    # a manager with local workers, collecting their DEBUG logs, on a signed job
    param = RedisParam(2, jobname=jobname, url=url, log=True, threshold="DEBUG")
    seen.add("repr(RedisParam) before start", repr(param))
    seen.add("repr(Settings)", repr(param.settings))
    seen.add("repr(Settings.replace)", repr(param.settings.replace(retries=1)))
    with param:
        seen.add("repr(RedisParam) started", repr(param))
        seen.add("repr(Backend.address)", repr(param.backend.address))
        assert param.map(tasks.log_and_print, ["one", "two", "three"]) == ["one", "two", "three"]
        with pytest.raises(RuntimeError) as failed:
            param.map(tasks.log_and_print, ["bad"], fail=True)
        seen.add("task error", f"{failed.value!s} {failed.value!r}")
        cmdlines = _cmdlines()
        workers = {pid: line for pid, line in cmdlines.items() if "dask_redisparam.worker" in line}
        assert len(workers) >= 3, cmdlines  # the supervisor and its two workers
        assert any("redis-server" in line for line in cmdlines.values()), cmdlines  # the fixture's server
        for pid, line in cmdlines.items():
            seen.add(f"/proc/{pid}/cmdline", line)
        # the environment is how they get the password and the secret: it is there, and only there
        some_worker = next(pid for pid, line in workers.items() if "--child" in line)
        environment = Path(f"/proc/{some_worker}/environ").read_bytes()
        assert PASSWORD.encode() in environment and SECRET.encode() in environment
        assert param.alive() and rpalive(param)

    # errors: a wrong password, a wrong URL, an unreachable server, a bad secret
    seen.error("wrong password", RedisParam(jobname=jobname, is_worker=False, url=wrong_url).start)
    assert RedisParam(jobname=jobname, is_worker=False, url=wrong_url).alive() is False  # logs a warning
    seen.error("missing location", lambda: Settings(password=PASSWORD, environ={}))
    for bad in (
        f"http://:{PASSWORD}@127.0.0.1:1",
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        f"redis://:{PASSWORD}@127.0.0.1:1/notadb",
        f"unix://:{PASSWORD}@",
    ):
        seen.error(f"bad url {bad.split(':')[0]}", lambda bad=bad: Settings(url=bad, environ={}))
        seen.error("bad REDISPARAM_URL", lambda bad=bad: Settings(environ={"REDISPARAM_URL": bad}))
    seen.error(
        "unreachable", RedisParam(jobname=jobname, is_worker=False, url=f"redis://:{PASSWORD}@127.0.0.1:1").start
    )
    seen.error("short secret", lambda: Signer.from_secret(SHORT_SECRET))
    seen.error("short secret setting", RedisParam(jobname=jobname, url=url, secret=SHORT_SECRET).start)
    seen.add("repr(Signer)", repr(Signer.from_secret(SECRET)))
    seen.add("repr(Settings) with a secret", repr(Settings(jobname=jobname, url=url, secret=SECRET, environ={})))

    # the commands, with the URL in the environment; the worker in burst mode at -vv (DEBUG)
    env = dict(environ, REDISPARAM_URL=url, REDISPARAM_JOBNAME=jobname)
    wrong_env = dict(env, REDISPARAM_URL=wrong_url)
    worker = [sys.executable, "-m", "dask_redisparam.worker", "--burst", "-vv"]
    for name, argv, run_env in (
        ("status", ["dask-redisparam", "status", "--rate-window", "0"], env),
        ("alive", ["dask-redisparam", "alive"], env),
        ("clean", ["dask-redisparam", "clean"], env),
        ("stop-all", ["dask-redisparam", "stop-all", "--wait", "0"], env),
        ("worker --burst -vv", worker, env),
        ("status, wrong password", ["dask-redisparam", "status", "--rate-window", "0"], wrong_env),
        ("alive, wrong password", ["dask-redisparam", "alive"], wrong_env),
        ("worker, wrong password", worker, wrong_env),
        ("worker, bad url", worker, dict(env, REDISPARAM_URL=f"redis://:{PASSWORD}@127.0.0.1:nope")),
    ):
        done = _cli(*argv, env=run_env)
        seen.add(f"{name}: stdout", done.stdout)
        seen.add(f"{name}: stderr", done.stderr)
        expected_ok = run_env is env and "bad url" not in name
        assert (done.returncode == 0) == expected_ok, (name, done.returncode, done.stderr)

    captured = capfd.readouterr()  # what the worker processes wrote to our stdout and stderr
    seen.add("captured stdout", captured.out)
    seen.add("captured stderr", captured.err)
    seen.add("log records", caplog.text)
    for record in caplog.records:
        seen.add(f"log record {record.name}", f"{record.getMessage()} {record.args!r} {record.exc_text}")
    assert "logged: one" in caplog.text  # the workers' task logs did come through
    assert "refused the default user" in caplog.text  # and rpalive's warning
    assert len(seen.texts) > 40
    seen.assert_clean()

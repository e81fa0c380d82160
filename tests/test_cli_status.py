"""``dask-redisparam status``: ``--json`` (validated against docs/status.schema.json), ``--watch --every``
(through a pseudo-terminal), CURRENT with task prefixes, dead letters; ``-h`` and ``--version`` everywhere."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import redis
from click.testing import CliRunner

import dask_redisparam
from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.cli import main, worker_command
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers, wait_until
from tests.test_cli_pool import run_cli

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "status.schema.json").read_text())


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    return dict(env, REDISPARAM_URL=url)


def _status(url: str, *args: str) -> Any:
    """``dask-redisparam status --url URL ARGS`` in this process (the entry points are tested with ``-h``)."""
    return CliRunner().invoke(main, ["status", "--url", url, *args])


def _validate(document: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def _subcommands(command: click.Command) -> list[list[str]]:
    """The paths below ``command``: ``[[]]`` for a command, the group itself and its commands' for a group."""
    if not isinstance(command, click.Group):
        return [[]]
    return [[], *([name, *sub] for name, c in command.commands.items() for sub in _subcommands(c))]


def test_help_and_version_on_both_commands() -> None:
    for argv in (["dask-redisparam", "-h"], ["dask-redisparam-worker", "-h"]):
        done = run_cli(*argv)
        assert done.returncode == 0 and "Usage:" in done.stdout and "-h, --help" in done.stdout, done.stderr
    runner = CliRunner()
    for command, prog in ((main, "dask-redisparam"), (worker_command, "dask-redisparam-worker")):
        done = runner.invoke(command, ["--version"])
        assert done.exit_code == 0 and done.output == f"{prog}, version {dask_redisparam.__version__}\n"
    paths = [[name, *sub] for name, command in main.commands.items() for sub in _subcommands(command)]
    for path in paths:  # every command and group, other helpers' too
        done = runner.invoke(main, [*path, "-h"])
        assert done.exit_code == 0 and f"Usage: redisparam {' '.join(path)}" in done.output, (path, done.output)
    assert runner.invoke(worker_command, ["-h"]).exit_code == 0


def test_status_json_validates_and_shows_dead_letters(
    redis_address: RedisAddress,
    jobname: str,
    manager: RedisParam,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    cli_workers(1, "--id", "js", "--heartbeat-interval", "0.1")
    url = redis_address.to_url(show_password=True)
    rclient.rpush(keys.queue(jobname), b"not a task message")
    assert wait_until(lambda: rclient.llen(keys.dead(jobname)) == 1, 10)
    keys_ = [("inc-aa", i) for i in range(5)]
    assert manager({k: (tasks.inc, k[1]) for k in keys_}, keys_) == (1, 2, 3, 4, 5)
    manager.publish("settings", {"alpha": 0.5}, ttl=60)
    done = _status(url, "--jobname", jobname, "--json", "--rate-window", "0.1")
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    _validate(document)
    assert document["jobname"] == jobname and document["server"] == redis_address.describe()
    assert document["dead_letters"] == 1 and document["queued"] == 0 and document["rate_window"] > 0
    rejection = document["last_rejection"]
    assert rejection["reason"] == "malformed" and rejection["worker"] == "js" and rejection["count"] == 1
    [dataset] = document["datasets"]
    assert dataset["name"] == "settings" and dataset["type"] == "builtins.dict" and 0 < dataset["ttl"] <= 60
    [worker] = document["workers"]
    assert worker["id"] == "js" and worker["tasks"] == 5 and worker["pid"] > 0 and worker["rss"] > 0
    assert abs(worker["beat"] - time.time()) < 5
    with pytest.raises(jsonschema.ValidationError):  # the schema can fail
        _validate(dict(document, workers=[dict(worker, tasks="5")]))

    # the table: the dead letters, the last rejection, and CURRENT with the prefix of the running task
    release = tmp_path / "release"
    graph = {("sleepy-thing-0f3c", 0): (tasks.wait_for_file, str(release))}
    runner = threading.Thread(target=manager, args=(graph, [("sleepy-thing-0f3c", 0)]))
    runner.start()
    try:
        assert wait_until(lambda: rclient.hget(keys.worker(jobname, "js"), "prefix") == b"sleepy-thing", 10)
        table = _status(url, "--jobname", jobname, "--rate-window", "0")
    finally:
        release.touch()
        runner.join(30)
        manager.unpublish("settings")
    assert table.exit_code == 0, table.output
    assert "dead-lettered messages: 1" in table.stdout and "last rejection:" in table.stdout
    assert "not a task message" in table.stdout and "tasks/s: -" in table.stdout
    assert "dataset settings: builtins.dict" in table.stdout
    header = next(line for line in table.stdout.splitlines() if line.startswith("ID"))
    assert header.split()[-1] == "CURRENT" and "RSS (MiB)" in header
    row = next(line for line in table.stdout.splitlines() if line.startswith("js "))
    assert "sleepy-thing (" in row  # the prefix, then (run/message)


def test_interval_is_a_deprecated_rate_window(redis_address: RedisAddress, jobname: str) -> None:
    url = redis_address.to_url(show_password=True)
    done = _status(url, "--jobname", jobname, "--interval", "0.1", "--json")
    assert done.exit_code == 0 and "--interval is deprecated" in done.stderr
    assert 0.1 <= json.loads(done.stdout)["rate_window"] < 1
    both = _status(url, "--jobname", jobname, "--interval", "1", "--rate-window", "2")
    assert both.exit_code == 2 and "not both" in both.stderr


def _read_until(fd: int, done: Callable[[bytes], bool], timeout: float) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while not done(out) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty closed: the process ended
                break
            out += chunk
    return out


def test_status_watch_refreshes_on_a_terminal_and_stops_on_ctrl_c(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]
) -> None:
    cli_workers(1, "--id", "wa")
    url = redis_address.to_url(show_password=True)
    leader, follower = pty.openpty()
    argv = ["dask-redisparam", "status", "--jobname", jobname, "--watch", "--every", "0.2"]
    proc = subprocess.Popen(argv, env=_env(url), stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    try:
        header = f"job {jobname} on".encode()
        out = _read_until(leader, lambda b: b.count(header) >= 3, 20)
        assert out.count(header) >= 3, out
        assert out.count(b"\x1b[2J") >= 3  # the screen is cleared before each refresh, as rq info does
        frames = out.split(b"\x1b[2J")
        # the last frame may be cut short by the read: check the complete ones
        assert all(b"wa " in frame for frame in frames[:-1] if header in frame)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert b"Traceback" not in _read_until(leader, lambda b: False, 0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


def test_status_watch_json_prints_one_document_per_refresh(redis_address: RedisAddress, jobname: str) -> None:
    url = redis_address.to_url(show_password=True)
    argv = ["dask-redisparam", "status", "--jobname", jobname, "--watch", "--json", "--every", "0.2"]
    with subprocess.Popen(argv, env=_env(url), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    for document in (first, second):
        _validate(document)
    assert first["rate_window"] == 0 and 0.15 < second["rate_window"] < 2  # measured between refreshes
    assert 0.15 < second["time"] - first["time"] < 2
    assert proc.returncode == 0

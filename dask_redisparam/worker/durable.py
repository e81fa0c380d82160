"""The durable local mode, from the side of the processes that use it: find, start, reattach to and stop the
detached embedded server and its local workers that live in a state directory.

``RedisParam(durable=True)`` (with no server configured) calls :func:`attach_or_start`. Under an ``fcntl`` lock
on ``<state_dir>/lock`` (one starter at a time) it reads ``<state_dir>/server.json``, the record that the
keeper (:mod:`dask_redisparam.worker.keeper`) writes once its server and workers are up. If the keeper lives and
the socket answers with the password made from the secret, the caller reattaches; otherwise (nothing recorded,
or a stale record of a killed keeper) it starts a new keeper on the same append-only file, whose values come back.

The state directory (:mod:`dask_redisparam.worker.state_dir`; default :func:`default_state_dir`) is private:
created ``0700``, refused (with an error naming it) when another user owns it or its group or others may enter
it. It holds:

==================  =========================================================================================
``lock``            the starters' lock (``fcntl.flock``)
``secret``          the signing secret (``0600``), made once and kept: values in the append-only file stay
                    readable by the next server, and the password of the server derives from it
``server.json``     the live keeper's record: pids, socket, job, workers, idle time (removed when it stops)
``redis.sock``      the server's Unix socket (no TCP port)
``appendonly*/``    the append-only file (``appendfsync everysec``); kept by ``server stop`` unless ``--purge``
``keeper.log``      what the keeper, the server's start and the workers wrote (warnings and errors)
==================  =========================================================================================

Examples
--------
>>> import tempfile
>>> d = prepare_state_dir(tempfile.mkdtemp() + "/state")
>>> oct(os.stat(d).st_mode & 0o777)
'0o700'
>>> read_record(d) is None
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..config.address import RedisAddress
from ..errors import ConfigurationError, ServerError
from .server import ping_socket, tail
from .state_dir import (
    LOG,
    MAX_SOCKET_PATH,
    RECORD,
    SECRET,
    SOCKET,
    default_state_dir,
    is_ours,
    password_of,
    pid_alive,
    prepare_state_dir,
    read_secret,
    state_lock,
)

__all__ = [
    "RECORD",
    "DurableServer",
    "attach_or_start",
    "default_state_dir",
    "password_of",
    "pid_alive",
    "prepare_state_dir",
    "read_record",
    "read_secret",
    "state_lock",
    "stop_durable",
    "write_record",
]


@dataclasses.dataclass(frozen=True)
class DurableServer:
    """The record of a live keeper (``server.json``) and the address of its server.

    Attributes
    ----------
    state_dir : str
        Where it lives.
    keeper, server, supervisor : int
        The pids of the keeper, its ``redis-server`` and its workers' supervisor.
    socket : str
        The server's Unix socket.
    jobname : str
        The job its workers serve.
    worker_ids : list of str
        The ids of its workers (first incarnations).
    started : float
        Unix time the keeper started.
    idle : float
        Seconds without work after which it stops itself.
    reattached : bool
        Whether :func:`attach_or_start` found it running (False: it started it).
    """

    state_dir: str
    keeper: int
    server: int
    supervisor: int
    socket: str
    jobname: str
    worker_ids: list[str]
    started: float
    idle: float
    reattached: bool = False

    def address(self, secret: str) -> RedisAddress:
        """Where the server listens, with its password."""
        return RedisAddress(path=self.socket, password=password_of(secret))

    def alive(self) -> bool:
        """Whether its keeper and server processes run."""
        return pid_alive(self.keeper) and pid_alive(self.server)

    def touch(self) -> bool:
        """Tell the keeper that a process is about to use it (its idle time starts again); False if it has stopped
        or is stopping (its record is gone)."""
        try:
            os.utime(os.path.join(self.state_dir, RECORD))
        except FileNotFoundError:
            return False
        return self.alive()

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        del fields["reattached"]
        return json.dumps(fields, indent=1)


def read_record(state_dir: str) -> DurableServer | None:
    """The record ``server.json`` of ``state_dir``, or None if there is none (or it is unreadable)."""
    try:
        with open(os.path.join(state_dir, RECORD)) as fh:
            fields: dict[str, Any] = json.load(fh)
        return DurableServer(**fields)
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: DurableServer) -> None:
    """Write ``server.json`` atomically (``0600``)."""
    path = os.path.join(record.state_dir, RECORD)
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(record.to_json())
    os.replace(tmp, path)


def answers(address: RedisAddress, timeout: float = 1.0) -> bool:
    """Whether the server at ``address`` (a Unix socket) accepts its password and answers ``PING``."""
    return address.path is not None and ping_socket(address.path, address.password, timeout)


def _live_record(state_dir: str, secret: str, timeout: float) -> DurableServer | None:
    """The record of the live keeper of ``state_dir`` once its server answers; None if there is no live keeper.

    A live keeper whose server does not answer yet (loading its append-only file, a machine under load) is waited
    for, never replaced: only a dead keeper's record is stale.

    Raises
    ------
    ServerError
        The keeper lives but its server did not answer within ``timeout`` seconds.
    """
    record = read_record(state_dir)
    if record is None:
        return None
    deadline = time.monotonic() + timeout
    while is_ours(record.keeper, state_dir):
        if pid_alive(record.server) and answers(record.address(secret), timeout=2.0):
            return record
        if time.monotonic() > deadline:
            raise ServerError(
                f"the durable server in {state_dir!r} (keeper pid {record.keeper}, redis-server pid {record.server}) "
                f"does not answer on {record.socket} after {timeout:g} s; see {os.path.join(state_dir, LOG)}, or "
                f"stop it: dask-redisparam server stop --state-dir {state_dir}"
            )
        time.sleep(0.1)  # a keeper whose server died stops itself within a second; then the record is stale
    return None


def attach_or_start(
    state_dir: str,
    jobname: str,
    workers: int,
    *,
    idle: float,
    worker_args: Sequence[str] = (),
    start_timeout: float = 60.0,
) -> tuple[DurableServer, str]:
    """Reattach to the durable server of ``state_dir``, or start it (with ``workers`` workers on ``jobname``).

    Returns its record and the pool's secret (``SECRET_ENV`` text).

    Raises
    ------
    ConfigurationError
        The live server's workers serve another job than ``jobname``.
    ServerError
        The keeper could not start its server or workers (its log's last lines are in the message), or a live
        keeper's server does not answer within ``start_timeout`` seconds (it is never replaced while it lives).
    """
    state_dir = prepare_state_dir(state_dir)
    if len(os.path.join(state_dir, SOCKET).encode()) > MAX_SOCKET_PATH:
        raise ConfigurationError(
            f"state_dir={state_dir!r} is too deep for the server's Unix socket (at most {MAX_SOCKET_PATH} bytes with "
            f"'/{SOCKET}'): choose a shorter one"
        )
    with state_lock(state_dir):
        secret = read_secret(state_dir, create=True)
        assert secret is not None
        record = _live_record(state_dir, secret, start_timeout)
        if record is not None:
            if record.jobname != jobname:
                raise ConfigurationError(
                    f"the durable server in {state_dir!r} serves job {record.jobname!r}, not jobname={jobname!r}: use "
                    f"that jobname, another state_dir, or stop it first (dask-redisparam server stop --state-dir "
                    f"{state_dir})"
                )
            os.utime(os.path.join(state_dir, RECORD))  # tells the keeper someone came: its idle time starts again
            return dataclasses.replace(record, reattached=True), secret
        _clear_stale(state_dir)
        return _start_keeper(state_dir, jobname, workers, idle, worker_args, start_timeout, secret), secret


def _clear_stale(state_dir: str) -> None:
    """After a keeper that died: wait for what it left (its server gets SIGTERM with it), remove its record."""
    record = read_record(state_dir)
    if record is not None:
        deadline = time.monotonic() + 10.0
        for pid in (record.keeper, record.supervisor, record.server):
            while is_ours(pid, state_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if is_ours(pid, state_dir):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, RECORD))


def _start_keeper(
    state_dir: str,
    jobname: str,
    workers: int,
    idle: float,
    worker_args: Sequence[str],
    timeout: float,
    secret: str,
) -> DurableServer:
    """Start the keeper (detached: a new session, then it forks away) and wait for its word that all is up."""
    read_end, write_end = os.pipe()
    argv = [
        sys.executable,
        "-c",
        "import sys; from dask_redisparam.cli import main; main(prog_name='dask-redisparam')",
        "server",
        "run",
        "--state-dir",
        state_dir,
        "--jobname",
        jobname,
        "--workers",
        str(workers),
        "--idle",
        repr(idle),
        "--start-timeout",
        repr(timeout),
        "--ready-fd",
        str(write_end),
        "--",
        *worker_args,
    ]
    log_fd = os.open(os.path.join(state_dir, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(log_fd, "ab") as log:
        try:
            first = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,  # the workers run in the starter's directory, as the local workers of a default param
                pass_fds=(write_end,),
                start_new_session=True,  # neither a Ctrl-C nor the kill of the starter's process group reaches it
            )
        except OSError as e:
            os.close(read_end)
            raise ServerError(f"cannot start the durable keeper in {state_dir!r}: {e}") from None
        finally:
            os.close(write_end)
    try:
        first.wait(timeout)  # it forks and exits: the keeper is then nobody's child
        word = _read_word(read_end, timeout)
    except subprocess.TimeoutExpired:
        first.kill()
        word = ""
    finally:
        os.close(read_end)
    if not word.startswith("ready"):
        raise ServerError(
            f"the durable server in {state_dir!r} did not start ({word.strip() or 'no answer'}); last lines of "
            f"{os.path.join(state_dir, LOG)}:\n{tail(os.path.join(state_dir, LOG)) or '(empty)'}"
        )
    record = read_record(state_dir)
    if record is None:
        raise ServerError(f"the durable keeper in {state_dir!r} said it was ready but wrote no {RECORD}")
    return record


def _read_word(fd: int, timeout: float) -> str:
    """The first line the keeper writes on its ready pipe ("" at EOF or after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").split("\n", 1)[0]


def stop_durable(state_dir: str, *, timeout: float = 30.0, purge: bool = False) -> DurableServer | None:
    """Stop the durable server of ``state_dir`` (workers first, warm, then the server), wait until its processes
    are gone and remove its socket and record; with ``purge`` also its append-only file and secret.

    Returns the record of what was stopped, None if nothing ran.
    """
    state_dir = prepare_state_dir(state_dir)
    with state_lock(state_dir):
        record = read_record(state_dir)
        if record is not None and is_ours(record.keeper, state_dir):
            os.kill(record.keeper, signal.SIGTERM)
        if record is not None:
            deadline = time.monotonic() + timeout
            pids = (record.keeper, record.supervisor, record.server)
            while any(is_ours(pid, state_dir) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in pids:
                if is_ours(pid, state_dir):
                    os.kill(pid, signal.SIGKILL)
        for name in (RECORD, SOCKET):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(state_dir, name))
        if purge:
            for name in os.listdir(state_dir):
                full = os.path.join(state_dir, name)
                if name.startswith("appendonly") or name in ("dump.rdb", SECRET):
                    shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)
    return record

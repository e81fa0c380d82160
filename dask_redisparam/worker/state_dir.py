"""The state directory of the durable local mode (:mod:`dask_redisparam.worker.durable`): where it is, that it is
private, its lock, the kept secret and the server password made from it, and whether a recorded process still
runs.

Examples
--------
>>> import tempfile
>>> d = prepare_state_dir(tempfile.mkdtemp() + "/state")
>>> oct(os.stat(d).st_mode & 0o777)
'0o700'
>>> read_secret(d) is None, read_secret(d, create=True) == read_secret(d)
(True, True)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator

from ..errors import ConfigurationError

__all__ = [
    "LOCK",
    "LOG",
    "MAX_SOCKET_PATH",
    "RECORD",
    "SECRET",
    "SOCKET",
    "default_state_dir",
    "is_ours",
    "password_of",
    "pid_alive",
    "prepare_state_dir",
    "read_secret",
    "state_lock",
]

RECORD = "server.json"
"""The live keeper's record."""
SECRET = "secret"
"""The pool's signing secret (``0600``)."""
LOCK = "lock"
"""The starters' lock."""
SOCKET = "redis.sock"
"""The server's Unix socket."""
LOG = "keeper.log"
"""The keeper's (and its workers') log."""
MAX_SOCKET_PATH = 100
"""Bytes a Unix socket path may have (``sun_path`` holds 108 on Linux, 104 on macOS)."""


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/dask-redisparam``, else ``~/.local/state/dask-redisparam``.

    Examples
    --------
    >>> default_state_dir().endswith("dask-redisparam")
    True
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(os.path.abspath(base), "dask-redisparam")


def prepare_state_dir(path: str | None) -> str:
    """Create the state directory (``0700``) if needed and check that it is private; return its absolute path.

    Raises
    ------
    ConfigurationError
        When ``state_dir`` is not a directory, is owned by another user, or its group or others have access.
    """
    path = os.path.abspath(os.path.expanduser(path)) if path else default_state_dir()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError as e:
        raise ConfigurationError(f"state_dir={path!r} cannot be created: {e}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"state_dir={path!r} is not a directory")
    if info.st_uid != os.getuid():
        raise ConfigurationError(f"state_dir={path!r} belongs to another user (uid {info.st_uid}); use your own")
    if info.st_mode & 0o077:
        raise ConfigurationError(
            f"state_dir={path!r} is accessible to its group or others (mode {oct(info.st_mode & 0o777)}); "
            f"it holds the pool's secret: `chmod 700 {path}` or choose another"
        )
    return path


@contextlib.contextmanager
def state_lock(state_dir: str) -> Iterator[None]:
    """Hold the starters' lock of ``state_dir`` (blocking)."""
    fd = os.open(os.path.join(state_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_secret(state_dir: str, create: bool = False) -> str | None:
    """The pool's secret (``SECRET_ENV`` text) kept in ``<state_dir>/secret``; made (``0600``) with ``create``."""
    path = os.path.join(state_dir, SECRET)
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        if not create:
            return None
        text = "0=" + secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        return text
    if os.stat(path).st_mode & 0o077:
        raise ConfigurationError(f"the secret file {path!r} is readable by others; `chmod 600 {path}`")
    return text


def password_of(secret: str) -> str:
    """The server's password, derived from the secret (so the secret file is the only credential kept).

    Examples
    --------
    >>> password_of("0=abc") == password_of("0=abc") != password_of("0=abd")
    True
    """
    return hashlib.sha256(b"dask-redisparam durable server\0" + secret.encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie.

    Examples
    --------
    >>> pid_alive(os.getpid())
    True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): it exists


def is_ours(pid: int, state_dir: str) -> bool:
    """Whether ``pid`` is a live process of this state dir (its pid may have been reused since the record was made:
    after a reboot); without ``/proc`` (macOS), whether it lives."""
    if not pid_alive(pid):
        return False
    if not os.path.isdir("/proc"):
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except PermissionError:  # another user's process: a pid used again
        return False
    except OSError:
        return pid_alive(pid)  # it went while we read: ours if it is still there (exiting)
    if not cmdline:  # a process in the middle of exiting shows no command line: it was ours, it is going
        return True
    return state_dir.encode() in cmdline or state_dir.encode() in environ

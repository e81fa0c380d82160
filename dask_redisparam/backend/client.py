"""The connection that every part of :class:`~dask_redisparam.backend.Backend` shares.

It holds the constants of the connection (timeouts, the send buffer), the redis-py client it builds
(:func:`_make_client`), the small helpers that shape arguments for the Lua scripts, and
:class:`BackendBase`: the client, the registered scripts, pipelined execution in one round trip
(:meth:`BackendBase._execute`), and the connection checks that turn failures into the package's errors. The
operation mixins (:mod:`.runs`, :mod:`.workers`, :mod:`.large`, :mod:`.admin`) derive from it; every public method
of each of them raises the package's errors, never redis-py's (:mod:`.replies`), but for the lost connections of
:data:`TRANSIENT_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..config.address import RedisAddress
from ..errors import AuthenticationFailed, PermissionDenied, ServerUnavailable
from . import keys, lua
from .commands import check_commands
from .replies import translate, translating
from .sentinel import _PrimaryUnknown, _SentinelAuthFailed, close_sentinels, sentinel_client

__all__ = [
    "MAX_BLOCK",
    "SEND_BUFFER",
    "SOCKET_TIMEOUT",
    "TRANSIENT_ERRORS",
    "BackendBase",
    "evalsha",
    "flat",
    "pairs",
    "worker_keys",
]

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, ConnectionError)
"""Errors after which a retry may succeed (a lost connection, a restarting server); callers catch these. The
package's :class:`~dask_redisparam.errors.ServerUnavailable`, and so
:class:`~dask_redisparam.errors.ServerLoading`, are among them (both are ``ConnectionError``)."""

SOCKET_TIMEOUT = 10.0
"""Seconds a reply may take; blocking commands use at most :data:`MAX_BLOCK`."""
MAX_BLOCK = 2.0
"""Longest timeout of a blocking command, in seconds; well under :data:`SOCKET_TIMEOUT`."""
SEND_BUFFER = 4 << 20
"""Socket send buffer asked for before writing large values (the default, ~200 KB, makes Redis read them in
small pieces: a third of the throughput)."""


def flat(first: int | str, mapping: dict[str, str]) -> list[int | str]:
    """``first`` and then the field/value pairs of ``mapping``, as one list of script arguments."""
    out: list[int | str] = [first]
    for field, value in mapping.items():
        out += [field, value]
    return out


def pairs(items: Iterable[tuple[str, Any]]) -> list[Any]:
    """``[(field, value), ...]`` -> ``[field, value, ...]``."""
    return [x for pair in items for x in pair]


def worker_keys(jobname: str, worker_id: str) -> list[str]:
    """The keys the deregister and reap scripts touch, in their KEYS order."""
    return [
        keys.processing(jobname, worker_id),
        keys.queue(jobname),
        keys.worker(jobname, worker_id),
        keys.control(jobname, worker_id),
        keys.workers(jobname),
    ]


def evalsha(pipe: Any, script: Any, script_keys: list[str], args: list[Any]) -> None:
    """Queue a script on a pipeline as a plain ``EVALSHA`` (see :meth:`Backend._execute`)."""
    pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)


def _make_client(address: RedisAddress, *, retries: int, connect_timeout: float) -> redis.Redis:
    common: dict[str, Any] = {
        "password": address.password,
        "username": address.username,
        "db": address.db,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        "health_check_interval": 30,
    }
    if address.kind == "sentinel":
        return sentinel_client(address, common)
    if address.path is not None:
        return redis.Redis(unix_socket_path=address.path, **common)
    if address.tls:  # the server's certificate is always verified (against ca_file, else the system's CAs)
        common.update(
            ssl_ca_certs=address.ca_file,
            ssl_certfile=address.cert_file,
            ssl_keyfile=address.key_file,
            ssl_cert_reqs="required",
        )
    return redis.Redis(
        host=address.host,
        port=address.port,
        ssl=address.tls,
        socket_keepalive=True,
        **common,
    )


class BackendBase:
    """The connection to one server and the registered scripts, which every group of operations uses.

    :class:`~dask_redisparam.backend.Backend` adds the operations; this class only connects, runs pipelines and
    checks the server and the credentials.

    Attributes
    ----------
    address : RedisAddress
        The server.
    bytes_downloaded : int
        Bytes of stored values this backend fetched (results, not messages).
    rerun : list of int
        Positions of the script calls that the last :meth:`_execute` ran again after loading the scripts.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Make every public method of a group of operations raise the package's errors (:mod:`.replies`)."""
        super().__init_subclass__(**kwargs)
        _translate_methods(cls)

    def __init__(self, address: RedisAddress, *, retries: int = 3, connect_timeout: float = 5.0) -> None:
        self.address = address
        self.bytes_downloaded = 0
        self._r = _make_client(address, retries=retries, connect_timeout=connect_timeout)
        self._complete = self._r.register_script(lua.COMPLETE)
        self._register = self._r.register_script(lua.REGISTER)
        self._deregister = self._r.register_script(lua.DEREGISTER)
        self._heartbeat = self._r.register_script(lua.HEARTBEAT)
        self._reap = self._r.register_script(lua.REAP)
        self._notify = self._r.register_script(lua.NOTIFY)
        self._ack = self._r.register_script(lua.ACK)
        self._copy = self._r.register_script(lua.COPY)
        self._move = self._r.register_script(lua.MOVE)
        self._ask_stop = self._r.register_script(lua.ASK_STOP)
        self._hold = self._r.register_script(lua.HOLD)
        self._extend = self._r.register_script(lua.EXTEND)
        self._unregister = self._r.register_script(lua.UNREGISTER)
        self._probe = self._r.register_script(lua.PROBE)
        self._claim_resource = self._r.register_script(lua.CLAIM_RESOURCE)
        self._release_claim = self._r.register_script(lua.RELEASE_CLAIM)
        self._requeue_claim = self._r.register_script(lua.REQUEUE_CLAIM)
        # the ones sent inside pipelines
        self._scripts = [self._notify, self._ack, self._ask_stop, self._complete, self._copy, self._extend]
        self._scripts += [self._unregister, self._probe]
        self.rerun: list[int] = []

    def _execute(self, build: Any, *, raise_on_error: bool = True) -> list[Any]:
        """Build a pipeline with ``build(pipe)`` and run it in one round trip; return the replies (with
        ``raise_on_error=False``, an error reply as its redis-py exception, not raised).

        Scripts in it go as plain ``EVALSHA`` (redis-py would add a ``SCRIPT EXISTS`` round trip to every pipeline
        with scripts). If the server does not know them (restarted, flushed), the other commands have run: the
        scripts are loaded and only the script calls that failed run again, after the pipeline (sending it all
        again would, for instance, push its messages twice). :attr:`rerun` lists their positions.
        """
        pipe = self._r.pipeline(transaction=False)
        build(pipe)
        stack = [args for args, _ in pipe.command_stack]
        replies = list(pipe.execute(raise_on_error=False))
        self.rerun = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if self.rerun:
            for script in self._scripts:
                self._r.script_load(script.script)
            for i in self.rerun:
                replies[i] = self._r.execute_command(*stack[i])  # type: ignore[no-untyped-call]
        for reply in replies:
            if raise_on_error and isinstance(reply, Exception):
                raise reply
        return replies

    def close(self) -> None:
        """Release the connections."""
        self._r.close()
        close_sentinels(self._r)

    def _describe_user(self) -> str:
        return f"user {self.address.username!r}" if self.address.username else "the default user"

    def ping(self) -> bool:
        """Return True if the server answers; raise a package error naming the server otherwise."""
        try:
            return bool(self._r.ping())
        except redis.exceptions.BusyLoadingError as e:
            raise translate(e, self.address.describe(), self._describe_user()) from None
        except redis.AuthenticationError as e:
            if isinstance(e, _SentinelAuthFailed):
                raise AuthenticationFailed(f"{self.address.describe()}: {e}") from None
            raise AuthenticationFailed(
                f"Redis at {self.address.describe()} refused {self._describe_user()}: {e}"
            ) from None
        except redis.ResponseError as e:
            if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
                raise AuthenticationFailed(
                    f"Redis at {self.address.describe()} refused {self._describe_user()}: {e}"
                ) from None
            raise translate(e, self.address.describe(), self._describe_user()) from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            hint = ""
            text = str(e)
            if isinstance(e, _PrimaryUnknown):  # the Sentinels' own words say it all
                pass
            elif not self.address.tls and not isinstance(e, redis.TimeoutError) and "connecting to" not in text:
                # connected, then dropped before any reply: what a TLS port does to a plaintext client
                hint = " (the server closed the connection: it may require TLS; use a rediss:// URL)"
            elif self.address.tls and ("WRONG_VERSION_NUMBER" in text or "wrong version number" in text):
                hint = " (the server does not speak TLS here: use a redis:// URL or the server's TLS port)"
            elif self.address.tls and "CERTIFICATE_VERIFY_FAILED" in text:
                hint = " (check the CA file: tls_ca_file, REDISPARAM_TLS_CA_FILE or the URL's ssl_ca_certs)"
            elif self.address.tls and self.address.cert_file is None and ("EOF" in text or "CERTIFICATE_REQ" in text):
                hint = " (the server may require a client certificate: tls_cert_file and tls_key_file)"
            elif self.address.tls and "Timeout connecting" in text:  # a plaintext port never answers a TLS hello
                hint = " (no TLS handshake: is this the server's TLS port? a plaintext port needs a redis:// URL)"
            raise ServerUnavailable(f"cannot connect to Redis at {self.address.describe()}: {e}{hint}") from None

    def check_job_access(self, jobname: str, *, commands: bool = True, wait: bool = False) -> None:
        """Check that the user may use the keys of ``jobname`` and run every command the job sends.

        Two round trips: one ``EXISTS`` of the job's queue, then each command of
        :data:`~.commands.JOB_COMMANDS` once, harmlessly (:func:`~.commands.check_commands`), and ``WAIT`` with
        ``wait=True`` (workers with ``replicas`` > 0). With ``commands=False`` only the first: what a read-only look
        at the job (``status``) needs.

        Raises
        ------
        PermissionDenied
            If the server's ACL denies a key of the job or a command (``NOPERM``); the message names the server,
            the user and the key pattern or the commands that the user's ACL must allow.
        ServerReadOnly, PersistenceFailed, ServerOutOfMemory
            If the server refuses writes: a replica, a failed RDB snapshot, memory full.
        """
        where, user = self.address.describe(), self._describe_user()
        try:
            self._r.exists(keys.queue(jobname))
        except redis.exceptions.NoPermissionError as e:
            if "to run the" not in str(e):  # denied the key (a missing EXISTS is found with the other commands)
                raise self._keys_denied(jobname, e) from None
            if not commands:
                raise
        if not commands:
            return
        denied, key_refusals, others = check_commands(self._r, jobname, wait=wait)
        if denied:
            allow = " ".join(f"+{name}" for name in denied)
            raise PermissionDenied(
                f"Redis at {where} denies {user} the command(s) {', '.join(c.upper() for c in denied)} that "
                f"job {jobname!r} uses: add {allow} to the user's ACL (every command dask-redisparam needs is on "
                "the security page of the documentation)"
            )
        if key_refusals:
            raise self._keys_denied(jobname, f"{key_refusals[0].upper()} of a key of the job refused")
        if others:
            raise translate(others[0], where, user)

    def _keys_denied(self, jobname: str, error: object) -> PermissionDenied:
        return PermissionDenied(
            f"Redis at {self.address.describe()} denies {self._describe_user()} the keys of job {jobname!r}"
            f" (NOPERM: {error}): the user's ACL must allow the key pattern ~{keys.job_pattern(jobname)}"
            " and the commands of dask-redisparam (see the security page of the documentation)"
        )


def _translate_methods(cls: type) -> None:
    """Wrap the public methods defined in ``cls`` with :func:`~.replies.translating`."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and callable(value) and not isinstance(value, (classmethod, staticmethod)):
            setattr(cls, name, translating(value))


_translate_methods(BackendBase)

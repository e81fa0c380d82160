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

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..config.address import RedisAddress
from ..errors import AuthenticationFailed, PermissionDenied, ServerUnavailable
from . import keys, lua
from .cluster import ClusterMap
from .commands import CLUSTER_COMMANDS, check_commands
from .nodes import NodeClient
from .replies import translate, translating
from .sentinel import _PrimaryUnknown, _SentinelAuthFailed, close_sentinels, sentinel_client
from .slots import routing

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


def _make_client(
    address: RedisAddress, *, retries: int, connect_timeout: float, client_class: type[redis.Redis] = redis.Redis
) -> redis.Redis:
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
        return client_class(unix_socket_path=address.path, **common)
    if address.tls:  # the server's certificate is always verified (against ca_file, else the system's CAs)
        common.update(
            ssl_ca_certs=address.ca_file,
            ssl_certfile=address.cert_file,
            ssl_keyfile=address.key_file,
            ssl_cert_reqs="required",
        )
    return client_class(
        host=address.host,
        port=address.port,
        ssl=address.tls,
        socket_keepalive=True,
        **common,
    )


class _Script:
    """A Lua script run with ``EVALSHA`` on the backend's current node (``self._r`` when it is called), loaded there
    first if the node does not know it: redis-py's ``Script`` stays bound to one client, which a cluster has not."""

    def __init__(self, backend: BackendBase, source: str) -> None:
        self.script = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._backend = backend
        if backend._cluster is not None:
            backend._cluster.scripts[self.sha] = source

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        client = self._backend._r
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.script)
            return client.evalsha(self.sha, len(keys), *keys, *args)


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
        self._cluster: ClusterMap | None = None
        self._client: redis.Redis | None = None
        if address.kind == "cluster":

            def node_client(node: RedisAddress) -> NodeClient:
                made = _make_client(node, retries=retries, connect_timeout=connect_timeout, client_class=NodeClient)
                return made  # type: ignore[return-value]

            self._cluster = ClusterMap(address, node_client)
        else:
            self._client = _make_client(address, retries=retries, connect_timeout=connect_timeout)
        self._complete = _Script(self, lua.COMPLETE)
        self._register = _Script(self, lua.REGISTER)
        self._deregister = _Script(self, lua.DEREGISTER)
        self._heartbeat = _Script(self, lua.HEARTBEAT)
        self._reap = _Script(self, lua.REAP)
        self._notify = _Script(self, lua.NOTIFY)
        self._ack = _Script(self, lua.ACK)
        self._copy = _Script(self, lua.COPY)
        self._move = _Script(self, lua.MOVE)
        self._ask_stop = _Script(self, lua.ASK_STOP)
        self._hold = _Script(self, lua.HOLD)
        self._extend = _Script(self, lua.EXTEND)
        self._unregister = _Script(self, lua.UNREGISTER)
        self._probe = _Script(self, lua.PROBE)
        self._claim_resource = _Script(self, lua.CLAIM_RESOURCE)
        self._release_claim = _Script(self, lua.RELEASE_CLAIM)
        self._requeue_claim = _Script(self, lua.REQUEUE_CLAIM)
        # the ones sent inside pipelines
        self._scripts = [self._notify, self._ack, self._ask_stop, self._complete, self._copy, self._extend]
        self._scripts += [self._unregister, self._probe]
        self.rerun: list[int] = []

    @property
    def _r(self) -> redis.Redis:
        """The client: of the one server, or on a cluster of the primary of the job this thread works on
        (:mod:`.cluster`)."""
        if self._cluster is None:
            return self._client  # type: ignore[return-value]
        return self._cluster.current()

    def _where(self) -> str:
        """The server (on a cluster: the node and the slot) that error messages name."""
        return self.address.describe() if self._cluster is None else self._cluster.where()

    def _nodes(self) -> list[redis.Redis]:
        """Every server to ask what spans jobs (on a cluster, every primary)."""
        return [self._r] if self._cluster is None else list(self._cluster.primaries())

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
        if self._cluster is not None:
            self._cluster.close()
        elif self._client is not None:
            self._client.close()
            close_sentinels(self._client)

    def _describe_user(self) -> str:
        return f"user {self.address.username!r}" if self.address.username else "the default user"

    def ping(self) -> bool:
        """Return True if the server answers; raise a package error naming the server otherwise."""
        try:
            if self._cluster is not None:  # the slot map, then every primary
                self._cluster.refresh(force=True)
                return all([bool(client.ping()) for client in self._cluster.primaries()])
            return bool(self._r.ping())
        except ServerUnavailable:
            raise
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
        extra = CLUSTER_COMMANDS if self._cluster is not None else {}
        denied, key_refusals, others = check_commands(self._r, jobname, extra, wait=wait)
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
            setattr(cls, name, translating(routing(value)))


_translate_methods(BackendBase)

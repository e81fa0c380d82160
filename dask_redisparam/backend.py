"""The one doorway to Redis: every redis-py call of the package is in this module.

:class:`Backend` wraps one connection pool to one server and offers the few operations that the manager
(:mod:`dask_redisparam.scheduler`), the workers (:mod:`dask_redisparam.worker`) and the CLI need. Each
operation is one round trip: a pipeline or a Lua script, never one command per task.

Blocking calls (``BLMOVE``, ``BLPOP``) always use a timeout shorter than the socket timeout, since redis-py
otherwise retries a blocking call that outlives its socket silently for a minute.

Examples
--------
>>> from dask_redisparam.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.ping()
...     backend.close()
True
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import PythonRespSerializer
from redis.retry import Retry

from . import keys, lua
from .address import RedisAddress
from .bulk import Part, read_bulk_into
from .errors import AuthenticationFailed, ServerError, ServerUnavailable
from .protocol import encode_lost

__all__ = ["TRANSIENT_ERRORS", "Backend"]

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, ConnectionError)
"""Errors after which a retry may succeed (a lost connection, a restarting server); callers catch these."""

SOCKET_TIMEOUT = 10.0
"""Seconds a reply may take; blocking commands use at most :data:`MAX_BLOCK`."""
MAX_BLOCK = 2.0
SEND_BUFFER = 4 << 20
"""Socket send buffer asked for before writing large values (the default, ~200 KB, makes Redis read them in
small pieces: a third of the throughput)."""
"""Longest timeout of a blocking command, in seconds; well under :data:`SOCKET_TIMEOUT`."""


def _flat(first: int | str, mapping: dict[str, str]) -> list[int | str]:
    out: list[int | str] = [first]
    for field, value in mapping.items():
        out += [field, value]
    return out


def _pairs(items: Iterable[tuple[str, Any]]) -> list[Any]:
    """``[(field, value), ...]`` -> ``[field, value, ...]``."""
    return [x for pair in items for x in pair]


def _worker_keys(jobname: str, worker_id: str) -> list[str]:
    """The keys the deregister and reap scripts touch, in their KEYS order."""
    return [
        keys.processing(jobname, worker_id),
        keys.queue(jobname),
        keys.worker(jobname, worker_id),
        keys.control(jobname, worker_id),
        keys.workers(jobname),
    ]


def _evalsha(pipe: Any, script: Any, script_keys: list[str], args: list[Any]) -> None:
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


class Backend:
    """Redis operations of manager, workers and CLI, for one server.

    Use :meth:`connect`, which checks the server and the credentials at once and turns failures into
    :class:`~dask_redisparam.errors.ServerUnavailable` or
    :class:`~dask_redisparam.errors.AuthenticationFailed` naming the server.

    Attributes
    ----------
    address : RedisAddress
        The server.
    bytes_downloaded : int
        Bytes of stored values this backend fetched with :meth:`fetch_values` (results, not messages).
    """

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
        self._scripts = [self._notify, self._ack, self._ask_stop, self._complete]  # the ones sent inside pipelines
        self.rerun: list[int] = []

    def _execute(self, build: Any) -> list[Any]:
        """Build a pipeline with ``build(pipe)`` and run it in one round trip; return the replies.

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
            if isinstance(reply, Exception):
                raise reply
        return replies

    @classmethod
    def connect(cls, address: RedisAddress, *, retries: int = 3) -> Backend:
        """Connect and check with ``PING``; fail fast with an error that names the server."""
        probe = cls(address, retries=0)
        try:
            probe.ping()
        finally:
            probe.close()
        return cls(address, retries=retries)

    def close(self) -> None:
        """Release the connections."""
        self._r.close()

    def _describe_user(self) -> str:
        return f"user {self.address.username!r}" if self.address.username else "the default user"

    def ping(self) -> bool:
        """Return True if the server answers; raise a package error naming the server otherwise."""
        try:
            return bool(self._r.ping())
        except redis.AuthenticationError as e:
            raise AuthenticationFailed(
                f"Redis at {self.address.describe()} refused {self._describe_user()}: {e}"
            ) from None
        except redis.ResponseError as e:
            if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
                raise AuthenticationFailed(
                    f"Redis at {self.address.describe()} refused {self._describe_user()}: {e}"
                ) from None
            raise ServerError(f"Redis at {self.address.describe()}: {e}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            hint = ""
            text = str(e)
            if not self.address.tls and not isinstance(e, redis.TimeoutError) and "connecting to" not in text:
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

    def check_job_access(self, jobname: str) -> None:
        """Check with one ``EXISTS`` that the user may use the keys of ``jobname``.

        Raises
        ------
        AuthenticationFailed
            If the server's ACL denies it (``NOPERM``); the message names the user, the server and the key
            pattern that the user's ACL must allow.
        """
        try:
            self._r.exists(keys.queue(jobname))
        except redis.exceptions.NoPermissionError as e:
            raise AuthenticationFailed(
                f"Redis at {self.address.describe()} denies {self._describe_user()} the keys of job {jobname!r}"
                f" (NOPERM: {e}): the user's ACL must allow the key pattern ~{keys.job_pattern(jobname)}"
                " and the commands of dask-redisparam (see the security page of the documentation)"
            ) from None

    # ------------------------------------------------------------------ manager side
    def live_workers(self, jobname: str) -> list[str]:
        """Ids of the workers of ``jobname`` whose lease has not expired (two round trips)."""
        return self.worker_liveness(jobname)[0]

    def worker_liveness(self, jobname: str) -> tuple[list[str], list[str]]:
        """Ids of the registered workers of ``jobname``: ``(live, dead)``; dead ones' leases expired."""
        ids = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        if not ids:
            return [], []
        pipe = self._r.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(keys.worker(jobname, wid))
        flags = pipe.execute()
        return (
            [wid for wid, alive in zip(ids, flags, strict=True) if alive],
            [wid for wid, alive in zip(ids, flags, strict=True) if not alive],
        )

    def reap_worker(self, jobname: str, worker_id: str) -> list[tuple[str, int, int]]:
        """Requeue what a dead worker held (attempt + 1, atomically), forget it, and tell the runs' managers.

        Returns ``(run_id, msg_id, stamp)`` of every message put back (stamp: the server's time, in microseconds).
        """
        flat = self._reap(
            keys=_worker_keys(jobname, worker_id),
            args=[worker_id],
        )
        moved = [(flat[i].decode(), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
        if moved:

            def notify(pipe: Any) -> None:
                for run_id, msg_id, stamp in moved:
                    notice = encode_lost(msg_id, stamp, worker_id)
                    _evalsha(pipe, self._notify, [keys.alive(jobname, run_id), keys.done(jobname, run_id)], [notice])

            self._execute(notify)
        return moved

    def open_run(
        self, jobname: str, run_id: str, ttl: float, values: dict[str, bytes], parts: Sequence[Part] = ()
    ) -> None:
        """Mark the run alive for ``ttl`` seconds and upload ``values`` (field -> sealed literal) and the ``parts``
        of large ones."""
        data, ms = keys.data(jobname, run_id), int(ttl * 1000)
        if parts:
            commands: list[tuple[Any, ...]] = [("HSET", data, name, view) for name, view in parts]
            commands += [("SET", keys.alive(jobname, run_id), b"1", "PX", ms), ("PEXPIRE", data, ms)]
            for reply in self._send_large(commands):
                if isinstance(reply, Exception):
                    raise reply
        pipe = self._r.pipeline(transaction=False)
        pipe.set(keys.alive(jobname, run_id), b"1", px=ms)
        if values:
            pipe.hset(data, mapping=cast(Any, values))
            pipe.pexpire(data, ms)
        pipe.execute()

    def exchange(
        self,
        jobname: str,
        run_id: str,
        messages: Sequence[bytes],
        release: Sequence[str],
        ttl: float,
        acknowledge: Sequence[bytes] = (),
        max_records: int = 4096,
    ) -> tuple[list[bytes], bool]:
        """One round trip of the manager.

        Drops the completion records ``acknowledge`` (those the last call returned and the manager applied),
        pushes ``messages``, deletes ``release`` fields, renews the run's lease for ``ttl`` seconds and reads up
        to ``max_records`` completion records. Records are removed only once acknowledged, and the removal is
        idempotent, so a reply lost with a broken connection loses no record (a record may come twice; the
        manager ignores repeats). Returns ``(records, run alive)``.
        """
        done = keys.done(jobname, run_id)

        def build(pipe: Any) -> None:
            if acknowledge:
                _evalsha(pipe, self._ack, [done], [acknowledge[0], acknowledge[-1], len(acknowledge)])
            if messages:
                pipe.lpush(keys.queue(jobname), *messages)
            if release:
                pipe.hdel(keys.data(jobname, run_id), *release)
            ms = int(ttl * 1000)
            pipe.pexpire(keys.data(jobname, run_id), ms)
            pipe.pexpire(keys.alive(jobname, run_id), ms)
            pipe.lrange(done, 0, max_records - 1)

        replies = self._execute(build)
        records = list(replies[-1])
        if acknowledge and 0 in self.rerun and replies[0]:  # the records read still began with the ones dropped
            records = records[len(acknowledge) :]
        return records, bool(replies[-2])

    def wait_records(self, jobname: str, run_id: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds (at most :data:`MAX_BLOCK`) until a completion record is there.

        Nothing is removed (the head of the list is moved onto itself), so nothing can be lost in transit.
        """
        done = keys.done(jobname, run_id)
        return self._r.blmove(done, done, min(timeout, MAX_BLOCK), "LEFT", "LEFT") is not None  # type: ignore[arg-type]

    def run_alive(self, jobname: str, run_id: str) -> bool:
        """Whether the run's lease key still exists."""
        return bool(self._r.exists(keys.alive(jobname, run_id)))

    def fetch_values(self, jobname: str, run_id: str, fields: Sequence[str]) -> list[bytes | None]:
        """Download stored values (one ``HMGET``)."""
        if not fields:
            return []
        values = cast(list[bytes | None], self._r.hmget(keys.data(jobname, run_id), list(fields)))
        self.bytes_downloaded += sum(len(v) for v in values if v is not None)
        return values

    def withdraw(self, jobname: str, messages: Sequence[bytes]) -> list[bool]:
        """Remove messages that no worker has claimed yet from the queue; say which were still there."""
        if not messages:
            return []
        pipe = self._r.pipeline(transaction=False)
        for message in messages:
            pipe.lrem(keys.queue(jobname), 1, message)  # type: ignore[arg-type]
        return [bool(n) for n in pipe.execute()]

    def keep_for_redo(self, jobname: str, run_id: str, ttl: float) -> bool:
        """Keep a failed run's stored values for ``ttl`` seconds under its redo key; False if it had none."""
        pipe = self._r.pipeline(transaction=False)
        pipe.exists(keys.data(jobname, run_id))
        replies = pipe.execute()
        if not replies[0]:
            return False
        pipe = self._r.pipeline(transaction=False)
        pipe.rename(keys.data(jobname, run_id), keys.redo(jobname, run_id))
        pipe.pexpire(keys.redo(jobname, run_id), int(ttl * 1000))
        pipe.execute()
        return True

    def copy_from_redo(self, jobname: str, redo_run: str, run_id: str, fields: dict[str, str]) -> int:
        """Copy kept values (new field -> field in the redo hash) into a run's data hash, inside Redis.

        Returns how many were there to copy.
        """
        if not fields:
            return 0
        args: list[str] = []
        for new, old in fields.items():
            args += [new, old]
        return int(self._copy(keys=[keys.redo(jobname, redo_run), keys.data(jobname, run_id)], args=args))

    def close_run(self, jobname: str, run_id: str) -> None:
        """Delete every key of the run."""
        self._r.delete(keys.alive(jobname, run_id), keys.data(jobname, run_id), keys.done(jobname, run_id))

    # ------------------------------------------------------------------ worker side
    def register_worker(self, jobname: str, worker_id: str, info: dict[str, str], ttl: float) -> bool:
        """Register a worker with a lease of ``ttl`` seconds; False if a live worker has the same id."""
        # ARGV: the lease in ms, the field/value pairs for HSET, and last the id for SADD
        argv = _flat(int(ttl * 1000), info) + [worker_id]
        done = self._register(keys=[keys.worker(jobname, worker_id), keys.workers(jobname)], args=argv)
        return bool(done)

    def heartbeat(self, jobname: str, worker_id: str, ttl: float, info: dict[str, str]) -> tuple[bool, bool]:
        """Renew a worker's lease and update its fields.

        Returns ``(alive, stop)``: False if the lease had already expired, and whether a stop was requested.
        """
        return cast(
            tuple[bool, bool],
            tuple(
                bool(x)
                for x in self._heartbeat(keys=[keys.worker(jobname, worker_id)], args=_flat(int(ttl * 1000), info))
            ),
        )

    def request_stop(self, jobname: str, worker_ids: Sequence[str]) -> int:
        """Ask live workers to stop (warm); returns how many were asked."""

        def ask(pipe: Any) -> None:
            for wid in worker_ids:
                _evalsha(pipe, self._ask_stop, [keys.worker(jobname, wid)], [])

        return sum(int(x) for x in self._execute(ask))

    def worker_records(self, jobname: str) -> dict[str, dict[str, str]]:
        """Registration fields of every live worker of the job, by id."""
        ids = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        pipe = self._r.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(keys.worker(jobname, wid))
        out = {}
        for wid, fields in zip(ids, pipe.execute(), strict=True):
            if fields:
                out[wid] = {k.decode(): v.decode() for k, v in fields.items()}
        return out

    def queue_length(self, jobname: str) -> int:
        """Messages waiting in the job's queue."""
        return int(self._r.llen(keys.queue(jobname)))

    def run_ids(self, jobname: str) -> dict[str, bool]:
        """Every run with a key in Redis, and whether its manager is alive."""
        runs = {rid for k in self.scan_keys(keys.runs_pattern(jobname)) if (rid := keys.run_id_of(k))}
        pipe = self._r.pipeline(transaction=False)
        for rid in sorted(runs):
            pipe.exists(keys.alive(jobname, rid))
        return {rid: bool(alive) for rid, alive in zip(sorted(runs), pipe.execute(), strict=True)}

    def clean(self, jobname: str) -> tuple[list[str], list[str], int]:
        """Remove what dead workers and dead runs left; returns (dead workers, dead runs, messages requeued).

        A dead worker's claimed messages go back to the queue first: cleaning never loses work.
        """
        registered = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        live = set(self.live_workers(jobname))
        dead_workers = [wid for wid in registered if wid not in live]
        requeued = sum(self.deregister_worker(jobname, wid) for wid in dead_workers)
        dead_runs = [rid for rid, alive in self.run_ids(jobname).items() if not alive]
        for rid in dead_runs:
            self.close_run(jobname, rid)
        for message in cast(list[bytes], self._r.lrange(keys.queue(jobname), 0, -1)):
            head = message.split(b"|", 2)
            if len(head) == 3 and head[1].decode(errors="replace") in dead_runs:
                self._r.lrem(keys.queue(jobname), 1, message)  # type: ignore[arg-type]
        return dead_workers, dead_runs, requeued

    def deregister_worker(self, jobname: str, worker_id: str) -> int:
        """Return the worker's claimed messages to the queue and delete its keys; returns how many."""
        return int(
            self._deregister(
                keys=_worker_keys(jobname, worker_id),
                args=[worker_id],
            )
        )

    def claim(self, jobname: str, worker_id: str, timeout: float) -> bytes | None:
        """Move the next message into the worker's processing list (``BLMOVE``), waiting up to ``timeout``."""
        got = self._r.blmove(
            keys.queue(jobname),
            keys.processing(jobname, worker_id),
            min(timeout, MAX_BLOCK),  # type: ignore[arg-type]  # redis accepts fractional seconds
            "RIGHT",
            "LEFT",
        )
        return cast(bytes | None, got)

    def load_inputs(self, jobname: str, run_id: str, fields: Sequence[str]) -> tuple[bool, list[bytes | None]]:
        """Whether the run is alive, and the stored values of ``fields`` (one round trip)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.exists(keys.alive(jobname, run_id))
        if fields:
            pipe.hmget(keys.data(jobname, run_id), list(fields))
        replies = pipe.execute()
        return bool(replies[0]), (list(replies[1]) if fields else [])

    def complete(
        self,
        jobname: str,
        worker_id: str,
        run_id: str,
        message: bytes,
        record: bytes,
        values: Sequence[tuple[str, bytes]],
        ntasks: int,
        large: Sequence[tuple[str, bytes]] = (),
        parts: Sequence[Part] = (),
    ) -> int:
        """Store a batch's results and completion record and release the message, atomically.

        ``values`` and ``large`` are ``(field, sealed value)`` pairs, ``large`` the references of large values
        (:mod:`dask_redisparam.bulk`), whose ``parts`` are written first, in the same round trip. Returns 1 when
        stored, 0 when the run is gone and -1 when the worker no longer held the message (it was reaped and the
        message requeued); in both cases nothing is stored (and the parts are deleted). ``ntasks`` is added to the
        worker's task count.
        """
        args = (jobname, worker_id, run_id, message, record, values, ntasks, large, parts)
        return self.complete_and_claim(*args, claim_next=False)[0]

    def complete_and_claim(
        self,
        jobname: str,
        worker_id: str,
        run_id: str,
        message: bytes,
        record: bytes,
        values: Sequence[tuple[str, bytes]],
        ntasks: int,
        large: Sequence[tuple[str, bytes]] = (),
        parts: Sequence[Part] = (),
        *,
        claim_next: bool = True,
    ) -> tuple[int, bytes | None]:
        """:meth:`complete`, and in the same round trip claim the next message if one waits (``LMOVE`` into the
        worker's processing list, as :meth:`claim` does): ``(what complete returns, the message or None)``."""
        args: list[Any] = [message, record, ntasks, len(parts), *(name for name, _ in parts)]
        args += [len(large), *_pairs(large), *_pairs(values)]
        script_keys = [
            keys.alive(jobname, run_id),
            keys.data(jobname, run_id),
            keys.done(jobname, run_id),
            keys.processing(jobname, worker_id),
            keys.worker(jobname, worker_id),
        ]
        claim = ("LMOVE", keys.queue(jobname), keys.processing(jobname, worker_id), "RIGHT", "LEFT")
        if not parts:

            def build(pipe: Any) -> None:
                _evalsha(pipe, self._complete, script_keys, args)
                if claim_next:
                    pipe.lmove(*claim[1:])

            replies = self._execute(build)
        else:
            commands: list[tuple[Any, ...]] = [("HSET", keys.data(jobname, run_id), n, view) for n, view in parts]
            commands.append(("EVALSHA", self._complete.sha, len(script_keys), *script_keys, *args))
            if claim_next:
                commands.append(claim)
            replies = self._send_large(commands)
            if isinstance(replies[len(parts)], redis.exceptions.NoScriptError):  # the parts are written
                replies[len(parts)] = self._complete(keys=script_keys, args=args)
            replies = replies[len(parts) :]
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return int(replies[0]), (replies[1] if claim_next else None)

    def read_parts(self, jobname: str, run_id: str, targets: Sequence[Part]) -> bool:
        """Read the fields of ``targets`` straight into their views (the parts of large values); False when one is
        missing. One round trip; each part goes from the socket into its place with no intermediate copy.
        """
        if not targets:
            return True
        data = keys.data(jobname, run_id)
        pool = self._r.connection_pool
        conn: Any = pool.get_connection()
        found = True
        try:
            sock = getattr(conn, "_sock", None)
            if not isinstance(sock, socket.socket):  # not a plain (or TLS) socket: through redis-py, with a copy
                return self._read_parts_copying(data, targets)
            conn.send_packed_command([chunk for name, _ in targets for chunk in conn.pack_command("HGET", data, name)])
            for _, view in targets:
                found = read_bulk_into(sock, view) and found
        except BaseException:
            conn.disconnect()  # replies may be left unread: the connection cannot be reused
            raise
        finally:
            pool.release(conn)
        self.bytes_downloaded += sum(len(view) for _, view in targets)
        return found

    def _read_parts_copying(self, data: str, targets: Sequence[Part]) -> bool:
        pipe = self._r.pipeline(transaction=False)
        for name, _ in targets:
            pipe.hget(data, name)
        found = True
        for (_, view), got in zip(targets, pipe.execute(), strict=True):
            if got is None or len(got) != len(view):
                found = False
                continue
            view[:] = got
        return found

    def _send_large(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip with large arguments as they are (memoryviews: no copy, where
        redis-py's hiredis packer would join everything into one bytes object) and a wide send buffer.

        Returns the replies, an error reply as its exception (not raised: every reply is read).
        """
        pool = self._r.connection_pool
        conn: Any = pool.get_connection()
        try:
            sock = getattr(conn, "_sock", None)
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            packer: Any = PythonRespSerializer(6000, conn.encoder.encode)
            conn.send_packed_command([chunk for command in commands for chunk in packer.pack(*command)])
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as e:
                    replies.append(e)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        return replies

    def held_messages(self, jobname: str, worker_id: str) -> list[bytes]:
        """The messages in a worker's processing list (claimed, not completed), oldest first."""
        return list(reversed(cast(list[bytes], self._r.lrange(keys.processing(jobname, worker_id), 0, -1))))

    def dead_letter(self, jobname: str, worker_id: str, message: bytes) -> None:
        """Move a rejected message from the worker's processing list to the job's dead-letter list (last 100)."""
        self._move(keys=[keys.processing(jobname, worker_id), keys.dead(jobname)], args=[message, 100, 86400])

    def requeue_message(self, jobname: str, worker_id: str, message: bytes) -> None:
        """Give a claimed message back to the queue (another worker will take it), atomically."""
        self._move(keys=[keys.processing(jobname, worker_id), keys.queue(jobname)], args=[message, 0, 0])

    def release_message(self, jobname: str, worker_id: str, message: bytes) -> None:
        """Drop a message from the worker's processing list without a result (its run is gone)."""
        self._r.lrem(keys.processing(jobname, worker_id), 1, message)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ inspection
    def scan_keys(self, pattern: str) -> list[str]:
        """Key names matching ``pattern`` (SCAN, never KEYS)."""
        return sorted(k.decode() for k in self._r.scan_iter(match=pattern, count=1000))

    def server_time(self) -> float:
        """The Redis server's clock, in seconds."""
        sec, usec = self._r.time()
        return sec + usec / 1e6


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)

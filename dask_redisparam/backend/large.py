"""Large values on the wire: their parts go to and come from Redis without intermediate copies.

:class:`LargeValues` reads the parts of large values (:mod:`dask_redisparam.wire.bulk`) straight from the socket into
their buffers (a few parts asked for at a time), and sends commands whose arguments are large memoryviews as they
are, with a wide send buffer. The manager's uploads (:mod:`.runs`) and the workers' completions (:mod:`.workers`) use
the latter.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import PythonRespSerializer

from ..wire.bulk import Part, Targets
from ..wire.signing import PayloadRejected
from . import keys
from .client import SEND_BUFFER, BackendBase
from .nodes import REDIRECTS

__all__ = ["READ_WINDOW", "LargeValues"]

READ_WINDOW = 4
"""Parts of large values asked for at a time: one on its way to the reader, the next ones queued in Redis (work for
it while the reader is descheduled; at most this many parts in its reply buffers)."""


class LargeValues(BackendBase):
    """Reading and sending the parts of large values, one round trip each."""

    def read_parts(self, jobname: str, run_id: str, targets: Sequence[Part]) -> bool:
        """Read the fields of ``targets`` straight into their views (the parts of large values); False when one is
        missing. One round trip; each part goes from the socket into its place with no intermediate copy.
        """
        return self.read_parts_from(keys.data(jobname, run_id), targets)

    def read_parts_from(self, data: str, targets: Sequence[Part]) -> bool:
        """:meth:`read_parts` from any hash of values ``data`` (a run's, persisted values', a dataset's).

        At most :data:`READ_WINDOW` parts are asked for at a time: Redis copies a reply into its output buffers
        before it sends it, so asking for all of them at once would make it hold a second copy of the whole value
        (its memory doubles) in memory it touches for the first time. Given :class:`~..wire.bulk.Targets`, their
        ``on_part`` is called once each part is in place, while Redis sends the next.
        """
        if not targets:
            return True
        on_part = targets.on_part if isinstance(targets, Targets) else None
        pool = self._r.connection_pool
        conn: Any = pool.get_connection()
        found, redirected = True, False
        try:
            sock = getattr(conn, "_sock", None)
            if not isinstance(sock, socket.socket):  # not a plain (or TLS) socket: through redis-py, with a copy
                return self._read_parts_copying(data, targets)
            ask = [conn.pack_command("HGET", data, name) for name, _ in targets]
            conn.send_packed_command([chunk for command in ask[:READ_WINDOW] for chunk in command])
            for i, (_, view) in enumerate(targets):
                if i + READ_WINDOW < len(ask):  # replies are pending: no health check (it would read one of them)
                    conn.send_packed_command(ask[i + READ_WINDOW], check_health=False)
                if read_bulk_into(sock, view):
                    if on_part is not None:
                        on_part(i)
                else:
                    found = False
        except BaseException as e:
            conn.disconnect()  # replies may be left unread: the connection cannot be reused
            redirected = self._cluster is not None and _is_redirection(e)
            if not redirected:
                raise
        finally:
            pool.release(conn)
        if redirected:  # the slot is moving (a cluster): read through a pipeline, which follows it (.cluster)
            found = self._read_parts_copying(data, targets)
        self.bytes_downloaded += sum(len(view) for _, view in targets)
        return found

    def _read_parts_copying(self, data: str, targets: Sequence[Part]) -> bool:
        pipe = self._r.pipeline(transaction=False)
        for name, _ in targets:
            pipe.hget(data, name)
        found = True
        on_part = targets.on_part if isinstance(targets, Targets) else None
        for i, ((_, view), got) in enumerate(zip(targets, pipe.execute(), strict=True)):
            if got is None or len(got) != len(view):
                found = False
                continue
            view[:] = got
            if on_part is not None:
                on_part(i)
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
        if self._cluster is not None:  # what a node redirected (a slot moving), again where the cluster says
            for i, reply in enumerate(replies):
                if isinstance(reply, REDIRECTS):
                    try:
                        replies[i] = self._cluster.redo(commands[i], {}, reply)
                    except redis.exceptions.ResponseError as e:
                        replies[i] = e
        return replies


_REDIRECT_CODES = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"})


def _is_redirection(error: BaseException) -> bool:
    """Whether a raw reply's error is a cluster's redirection (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``)."""
    if isinstance(error, REDIRECTS):
        return True
    code = str(error).split(" ", 1)[0]
    return isinstance(error, redis.exceptions.ResponseError) and code in _REDIRECT_CODES


def read_bulk_into(sock: Any, view: memoryview) -> bool:
    """Read one RESP bulk reply from ``sock`` straight into ``view`` (which must have its exact size).

    Returns False for a nil reply (the field is missing). Raises :class:`ConnectionError` when the connection
    ends and :class:`~dask_redisparam.wire.signing.PayloadRejected` when the size differs (the caller must then drop
    the connection: the rest of the reply is unread).
    """
    line = _read_line(sock)
    if line in (b"$-1", b"_"):
        return False
    if not line.startswith(b"$"):
        raise ConnectionError(f"unexpected reply to HGET: {line[:100]!r}")
    size = int(line[1:])
    if size != len(view):
        raise PayloadRejected(f"a part of a large value has {size} bytes where its reference says {len(view)}")
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if not n:
            raise ConnectionError("the connection closed in the middle of a reply")
        got += n
    tail = b""
    while len(tail) < 2:
        more = sock.recv(2 - len(tail))
        if not more:
            raise ConnectionError("the connection closed in the middle of a reply")
        tail += more
    return True


def _read_line(sock: Any) -> bytes:
    line = bytearray()
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("the connection closed in the middle of a reply")
        line += byte
        if len(line) > (4096 if line.startswith(b"-") else 64):
            raise ConnectionError(f"unexpected reply to HGET: {bytes(line[:100])!r}")
    if line.startswith(b"-"):  # an error reply: named by the caller's backend (.replies), e.g. LOADING
        raise redis.exceptions.ResponseError(line[1:-2].decode(errors="replace"))
    return bytes(line[:-2])

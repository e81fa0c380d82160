"""The records that travel between manager and workers through Redis.

A **task message** (an item of the job's queue) is one *batch* of tasks of one run, wrapped in an envelope whose
header a worker can read without unpickling anything::

    b"D4|<run_id>|<msg_id>|<attempt>|" + <key id> + b"|" + <MAC> + b"|" + payload

The MAC (:mod:`dask_redisparam.wire.signing`) covers the protocol version, the job, the run, the message id, the
attempt and the payload; without a secret, key id and MAC are empty. Stored values and completion records are
sealed the same way, so nothing is unpickled before its signature is checked.

``payload`` is ``<4-byte big-endian length n>`` + ``<n bytes: the pickled exported globals, or none>`` + a
cloudpickled :class:`Batch` (:func:`join_payload`): the worker unpickles the exported dask config and environment
variables first, and unpickles the batch with them in effect, since some objects read settings as they are
unpickled. The exported part is the same for every message of a run, pickled once.

A batch holds tasks that are ready at once (a chunk, for load balancing) and linear chains of their dependents
(fused, so a chain costs one message). Each :class:`Entry` names the data-hash field of each input (``deps``) and
whether its own result must be stored (``store``).

A **completion record** (an item of the run's ``done`` list) is a pickled :class:`Completion`: one
:class:`Outcome` per entry, and ``batch_error`` when the payload could not even be decoded. The ``done`` list
also carries two kinds of *notices*, parsed and never unpickled: a **loss notice** (``!L|...``,
:func:`encode_lost`: a message went back to the queue after its worker died; signed like the records) and a
**rejection notice** (``!R|...``, :func:`encode_rejected`: a worker refused a message and dead-lettered it;
unsigned, since the refusing worker may lack the secret).

Examples
--------
>>> env = encode_task("r1", 7, 0, b"xyz", None, "job")
>>> env
b'D4|r1|7|0|||xyz'
>>> decode_header(env)
('r1', 7, 0, 10)
>>> bytes(open_task(env, None, "job"))
b'xyz'
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .signing import PayloadRejected, Signer, seal, seal_many, unseal, unseal_many

__all__ = [
    "ERROR",
    "OK",
    "UNEVALUATED",
    "Batch",
    "Completion",
    "Entry",
    "Outcome",
    "LOST",
    "REJECTED",
    "REJECTION_REASONS",
    "UNREPLICATED",
    "Rejection",
    "Unreplicated",
    "decode_unreplicated",
    "encode_unreplicated",
    "call_entry",
    "classify_rejection",
    "decode_header",
    "decode_rejected",
    "encode_lost",
    "encode_rejected",
    "open_lost",
    "dumps_completion",
    "encode_task",
    "lost_notices",
    "join_payload",
    "open_task",
    "seal_value",
    "seal_values",
    "split_payload",
    "unseal_value",
    "unseal_values",
    "loads_completion",
]

VERSION = b"D4"

OK = 0
ERROR = 1
UNEVALUATED = 2


class Entry(NamedTuple):
    """One task of a batch.

    Attributes
    ----------
    idx : int
        The task's number in its run; also the name of its field in the run's data hash.
    key : object
        The dask key.
    node : dask GraphNode or tuple
        What to call: ``node({dep_key: value, ...})``; or, for a plain ``Task`` (the commonest), its *call*
        ``(func, args)`` or ``(func, args, refs)``: ``func(*args)`` with each ``args[i]``, ``i`` in ``refs``, a
        dependency's key to replace by its value (:func:`call_entry`). A call pickles and unpickles several times
        faster than the ``Task`` object it stands for, and does the same.
    deps : tuple of (key, int)
        Each input's dask key and the number of the field (or earlier entry) that holds it.
    store : bool
        Whether the result goes to the data hash (it is requested, or later messages need it).
    identity : bytes or None
        With ``rng_seed``: the task's stable identity (:mod:`dask_redisparam.manager.identity`), which seeds its
        random streams; None when it has none (the key seeds them) or without ``rng_seed``.
    """

    idx: int
    key: Any
    node: Any
    deps: tuple[tuple[Any, int], ...]
    store: bool
    identity: bytes | None = None


class Batch(NamedTuple):
    """The payload of a task message: entries run in order; ``inline`` holds small literal inputs;
    ``timeout`` is the seconds each entry may run (None: no limit); ``rng_seed`` seeds each entry's random
    streams from its identity, else its key (None: fresh entropy); with ``log_threshold`` each entry's log
    records (at or above it) and its stdout/stderr are captured and travel back in its :class:`Outcome`. The
    manager's exported dask config and environment variables travel beside it in the payload
    (:func:`join_payload`)."""

    stop_on_error: bool
    inline: dict[int, Any]
    entries: list[Entry]
    timeout: float | None = None
    rng_seed: int | None = None
    log_threshold: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # the entries travel as plain tuples: a named tuple costs a Python-level call per entry to pickle and unpickle
        rows = [tuple(entry) for entry in self.entries]
        return (_batch, (self.stop_on_error, self.inline, rows, self.timeout, self.rng_seed, self.log_threshold))


def _batch(
    stop_on_error: bool,
    inline: dict[int, Any],
    rows: list[tuple[Any, ...]],
    timeout: float | None,
    rng_seed: int | None,
    log_threshold: int | None,
) -> Batch:
    """Rebuild a :class:`Batch` from its pickled form (see ``Batch.__reduce__``)."""
    new = tuple.__new__
    return Batch(stop_on_error, inline, [new(Entry, row) for row in rows], timeout, rng_seed, log_threshold)


def call_entry(call: tuple[Any, ...], inputs: dict[Any, Any]) -> Any:
    """Run an entry's *call* (see :class:`Entry`): ``func(*args)``, the dependencies' keys at ``refs`` replaced by
    their values in ``inputs`` (key -> value), as ``Task.__call__`` does with its ``TaskRef`` arguments.

    Examples
    --------
    >>> from operator import add
    >>> call_entry((add, (1, 2)), {}), call_entry((add, ("x", 2), (0,)), {"x": 40})
    (3, 42)
    """
    if len(call) == 2:
        return call[0](*call[1])
    func, args, refs = call
    args = list(args)
    for i in refs:
        args[i] = inputs[args[i]]
    return func(*args)


class Outcome(NamedTuple):
    """What became of one entry: ``status`` is OK, ERROR (``error`` holds the pickled exception) or
    UNEVALUATED; ``nbytes`` is the size of the stored result; times are the worker's clock, in seconds; ``log``
    is the captured :class:`~dask_redisparam.logs.TaskLog`, if any; ``parts`` names the fields that hold the parts
    of a large result (:mod:`dask_redisparam.wire.bulk`), deleted with it."""

    idx: int
    status: int
    error: bytes | None
    nbytes: int
    start: float
    end: float
    log: Any = None
    parts: tuple[str, ...] = ()


class Completion(NamedTuple):
    """A completion record: the message it answers, the worker that ran it and the outcomes."""

    msg_id: int
    attempt: int
    worker: str
    outcomes: list[Outcome]
    batch_error: bytes | None


def join_payload(exported: bytes, batch: bytes) -> bytes:
    """A task message's payload: the pickled exported globals (``b""``: none), then the pickled :class:`Batch`.

    Examples
    --------
    >>> payload = join_payload(b"cfg", b"batch")
    >>> [bytes(part) for part in split_payload(payload)]
    [b'cfg', b'batch']
    """
    return len(exported).to_bytes(4, "big") + exported + batch


def split_payload(payload: bytes | memoryview) -> tuple[memoryview, memoryview]:
    """Inverse of :func:`join_payload` (no copy): ``(pickled exported globals, pickled batch)``.

    Raises ``ValueError`` for a payload too short for its own length field.
    """
    view = memoryview(payload)
    n = int.from_bytes(view[:4], "big")
    if len(view) < 4 or len(view) < 4 + n:
        raise ValueError(f"a task payload of {len(view)} bytes announces {n} bytes of exported globals")
    return view[4 : 4 + n], view[4 + n :]


def _task_context(jobname: str, run_id: str, msg_id: int, attempt: int) -> bytes:
    return b"%s\0%s\0%s\0%d\0%d" % (VERSION, jobname.encode(), run_id.encode(), msg_id, attempt)


def encode_task(run_id: str, msg_id: int, attempt: int, payload: bytes, signer: Signer | None, jobname: str) -> bytes:
    """Wrap a pickled :class:`Batch` in the (signed) message envelope."""
    sealed = seal(signer, b"task", _task_context(jobname, run_id, msg_id, attempt), payload)
    return b"%s|%s|%d|%d|%s" % (VERSION, run_id.encode(), msg_id, attempt, sealed)


def open_task(message: bytes, signer: Signer | None, jobname: str) -> memoryview:
    """The payload of a task message of job ``jobname``, once its signature is checked (else PayloadRejected)."""
    run_id, msg_id, attempt, offset = decode_header(message)
    return unseal(signer, memoryview(message)[offset:], b"task", _task_context(jobname, run_id, msg_id, attempt))


def decode_header(message: bytes) -> tuple[str, int, int, int]:
    """Return ``(run_id, msg_id, attempt, payload_offset)`` of a task message.

    Raises ``ValueError`` for anything that is not a message of this protocol version.
    """
    parts = message.split(b"|", 4)
    if len(parts) != 5 or parts[0] != VERSION:
        raise ValueError(f"not a task message of protocol {VERSION.decode()}: {message[:40]!r}")
    offset = len(message) - len(parts[4])
    return parts[1].decode(), int(parts[2]), int(parts[3]), offset


LOST = b"!L|"


def _run_context(jobname: str, run_id: str) -> bytes:
    return b"%s\0%s" % (jobname.encode(), run_id.encode())


def encode_lost(
    msg_id: int, attempt: int, worker: str, signer: Signer | None = None, jobname: str = "", run_id: str = ""
) -> bytes:
    """A notice, pushed to a run's ``done`` list, that a message was requeued after its worker died.

    ``attempt`` is the Redis server's time of the requeue in microseconds: each loss is counted once, however
    often its notice is read. Notices are parsed, never unpickled; with a ``signer`` they are signed (bound to
    the job and the run), so that a forged one cannot count a death: ``b"!L|<key id>|<MAC>|<msg>|<stamp>|<worker>"``
    (key id and MAC empty without a secret).

    Examples
    --------
    >>> encode_lost(3, 1700000000123456, "w1")
    b'!L|||3|1700000000123456|w1'
    >>> open_lost(encode_lost(3, 1700000000123456, "w1"), None, "job", "r1")
    (3, 1700000000123456, 'w1')
    """
    body = b"%d|%d|%s" % (msg_id, attempt, worker.encode())
    return LOST + seal(signer, b"lost", _run_context(jobname, run_id), body)


def lost_notices(signer: Signer | None, jobname: str, worker: str) -> Callable[[str, int, int], bytes]:
    """The ``notice`` argument of :meth:`Backend.reap_worker <dask_redisparam.backend.Backend.reap_worker>`: makes
    the (signed) loss notice of each message of ``worker`` that a reaper puts back, ``(run_id, msg_id, stamp)``."""

    def notice(run_id: str, msg_id: int, stamp: int) -> bytes:
        return encode_lost(msg_id, stamp, worker, signer, jobname, run_id)

    return notice


def open_lost(record: bytes, signer: Signer | None, jobname: str, run_id: str) -> tuple[int, int, str]:
    """Inverse of :func:`encode_lost`: ``(msg_id, stamp, worker)``, once the signature is checked (else
    PayloadRejected; ``ValueError`` if it does not parse)."""
    body = unseal(signer, memoryview(record)[len(LOST) :], b"lost", _run_context(jobname, run_id))
    msg, stamp, worker = bytes(body).split(b"|", 2)
    return int(msg), int(stamp), worker.decode(errors="replace")


REJECTED = b"!R|"

REJECTION_REASONS = {
    "malformed": "not a task message",
    "version": "a message of another protocol version (another version of dask-redisparam)",
    "no-secret": "a signed message, but the worker has no secret",
    "unsigned": "an unsigned message, but the worker requires signed ones",
    "unknown-key": "signed with a key id that the worker does not know",
    "bad-signature": "a bad signature (the worker has another secret under that key id)",
    "rejected": "a message that failed its check",
}
"""The reasons a worker gives for refusing a task message, and what each one means."""

_REASON = re.compile(rb"[a-z-]{1,32}")
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEADER = re.compile(rb"(D[0-9]+)\|([^|]*)\|([0-9]{1,18})\|([0-9]{0,18})\|")


class Rejection(NamedTuple):
    """A rejection notice: a worker refused message ``msg_id`` of a run (dead-lettered, never unpickled).

    ``nonce`` tells repeats of one notice apart from new rejections; ``reason`` is a key of
    :data:`REJECTION_REASONS` (or one this version does not know).
    """

    msg_id: int
    attempt: int
    nonce: str
    reason: str
    worker: str


def encode_rejected(msg_id: int, attempt: int, nonce: str, reason: str, worker: str) -> bytes:
    """A notice, pushed to a live run's ``done`` list, that a worker refused one of its messages.

    It cannot be signed (the refusing worker may have no secret): it is parsed, never unpickled, and the manager
    treats it as evidence only (it sends the message again).

    Examples
    --------
    >>> encode_rejected(4, 0, "9f1c", "bad-signature", "w2")
    b'!R|4|0|9f1c|bad-signature|w2'
    >>> decode_rejected(encode_rejected(4, 0, "9f1c", "bad-signature", "w2"))
    Rejection(msg_id=4, attempt=0, nonce='9f1c', reason='bad-signature', worker='w2')
    """
    return b"%s%d|%d|%s|%s|%s" % (REJECTED, msg_id, attempt, nonce.encode(), reason.encode(), worker.encode())


def decode_rejected(record: bytes) -> Rejection:
    """Inverse of :func:`encode_rejected` (``ValueError`` if it does not parse)."""
    _, msg, attempt, nonce, reason, worker = record.split(b"|", 5)
    if not _REASON.fullmatch(reason) or len(nonce) > 64:
        raise ValueError(f"not a rejection notice: {record[:80]!r}")
    return Rejection(
        int(msg), int(attempt), nonce.decode(errors="replace"), reason.decode(), worker.decode(errors="replace")
    )


UNREPLICATED = b"!W|"


class Unreplicated(NamedTuple):
    """A notice that fewer replicas than asked (``replicas``, with ``replicas_required=True``) acknowledged the
    completion of message ``msg_id`` (its first task: field ``idx``) within the timeout."""

    msg_id: int
    idx: int
    acked: int
    wanted: int
    primary: str
    worker: str


def encode_unreplicated(notice: Unreplicated) -> bytes:
    """A notice, pushed to a run's ``done`` list after the completion it is about (parsed, never unpickled).

    Examples
    --------
    >>> encode_unreplicated(Unreplicated(4, 17, 0, 1, "10.0.0.1:6379", "w2"))
    b'!W|4|17|0|1|10.0.0.1:6379|w2'
    >>> decode_unreplicated(encode_unreplicated(Unreplicated(4, 17, 0, 1, "10.0.0.1:6379", "w2")))
    Unreplicated(msg_id=4, idx=17, acked=0, wanted=1, primary='10.0.0.1:6379', worker='w2')
    """
    n = notice
    return b"%s%d|%d|%d|%d|%s|%s" % (
        UNREPLICATED,
        n.msg_id,
        n.idx,
        n.acked,
        n.wanted,
        n.primary.encode(),
        n.worker.encode(),
    )


def decode_unreplicated(record: bytes) -> Unreplicated:
    """Inverse of :func:`encode_unreplicated` (``ValueError`` if it does not parse)."""
    _, msg, idx, acked, wanted, primary, worker = record.split(b"|", 6)
    return Unreplicated(
        int(msg),
        int(idx),
        int(acked),
        int(wanted),
        primary.decode(errors="replace")[:200],
        worker.decode(errors="replace"),
    )


def classify_rejection(message: bytes, error: Exception) -> tuple[str, str | None, int, int]:
    """Why a worker refused ``message`` and whose it is: ``(reason, run_id, msg_id, attempt)``.

    ``run_id`` is None when the header names no run (then no manager can be told). ``error`` is what
    :func:`decode_header` or :func:`open_task` raised.

    Examples
    --------
    >>> classify_rejection(b"garbage", ValueError("not a task message"))
    ('malformed', None, 0, 0)
    >>> classify_rejection(b"D1|r1|5|1|x", ValueError("not a task message"))
    ('version', 'r1', 5, 1)
    """
    reason = getattr(error, "reason", "malformed")
    match = _HEADER.match(message)
    if match is None:
        return reason, None, 0, 0
    version, run, msg, attempt = match.groups()
    if version != VERSION and not isinstance(error, PayloadRejected):
        reason = "version"
    run_id = run.decode(errors="replace")
    if not _RUN_ID.fullmatch(run_id):
        return reason, None, 0, 0
    return reason, run_id, int(msg), int(attempt or 0)


def dumps_completion(completion: Completion, signer: Signer | None, jobname: str, run_id: str) -> bytes:
    """Pickle and seal a completion record of a run."""
    msg_id, attempt, worker, outcomes, batch_error = completion
    rows = [tuple(outcome) for outcome in outcomes]  # plain tuples: a named tuple pickles several times slower
    payload = pickle.dumps((msg_id, attempt, worker, rows, batch_error), protocol=pickle.HIGHEST_PROTOCOL)
    return seal(signer, b"done", _run_context(jobname, run_id), payload)


def loads_completion(data: bytes, signer: Signer | None, jobname: str, run_id: str) -> Completion:
    """Inverse of :func:`dumps_completion`; checks the signature first (PayloadRejected)."""
    payload = unseal(signer, data, b"done", _run_context(jobname, run_id))
    msg_id, attempt, worker, outcomes, batch_error = pickle.loads(payload)
    new = tuple.__new__
    return Completion(msg_id, attempt, worker, [new(Outcome, o) for o in outcomes], batch_error)


def seal_value(blob: bytes, signer: Signer | None, jobname: str) -> bytes:
    """Seal a pickled value for the run's data hash (bound to the job: a value may move between runs, e.g. for
    redo, but not between jobs)."""
    return seal(signer, b"value", jobname.encode(), blob)


def seal_values(blobs: list[bytes], signer: Signer | None, jobname: str) -> list[bytes]:
    """:func:`seal_value` of each pickled value (the same bytes, faster for many)."""
    return seal_many(signer, b"value", jobname.encode(), blobs)


def unseal_values(
    sealed: Sequence[bytes | None], signer: Signer | None, jobname: str
) -> list[memoryview | PayloadRejected | None]:
    """:func:`unseal_value` of each stored value: the pickled value, or the refusal (None: no value)."""
    return unseal_many(signer, sealed, b"value", jobname.encode())


def unseal_value(sealed: bytes, signer: Signer | None, jobname: str) -> memoryview:
    """The pickled value inside a sealed one, once its signature is checked (else PayloadRejected)."""
    return unseal(signer, sealed, b"value", jobname.encode())

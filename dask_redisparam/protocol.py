"""The records that travel between manager and workers through Redis.

A **task message** (an item of the job's queue) is one *batch* of tasks of one run, wrapped in an envelope whose
header a worker can read without unpickling anything::

    b"D1|<run_id>|<msg_id>|<attempt>|" + payload

``payload`` is a cloudpickled :class:`Batch`. A batch holds tasks that are ready at once (a chunk, for load
balancing) and linear chains of their dependents (fused, so a chain costs one message). Each :class:`Entry`
names the data-hash field of each input (``deps``) and whether its own result must be stored (``store``).

A **completion record** (an item of the run's ``done`` list) is a pickled :class:`Completion`: one
:class:`Outcome` per entry, and ``batch_error`` when the payload could not even be decoded.

Examples
--------
>>> env = encode_task("r1", 7, 0, b"xyz")
>>> env
b'D1|r1|7|0|xyz'
>>> decode_header(env)
('r1', 7, 0, 10)
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

__all__ = [
    "ERROR",
    "OK",
    "UNEVALUATED",
    "Batch",
    "Completion",
    "Entry",
    "Outcome",
    "decode_header",
    "decode_lost",
    "encode_lost",
    "dumps_completion",
    "encode_task",
    "loads_completion",
]

VERSION = b"D1"

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
    node : dask GraphNode
        What to call: ``node({dep_key: value, ...})``.
    deps : tuple of (key, int)
        Each input's dask key and the number of the field (or earlier entry) that holds it.
    store : bool
        Whether the result goes to the data hash (it is requested, or later messages need it).
    """

    idx: int
    key: Any
    node: Any
    deps: tuple[tuple[Any, int], ...]
    store: bool


class Batch(NamedTuple):
    """The payload of a task message: entries run in order; ``inline`` holds small literal inputs;
    ``timeout`` is the seconds each entry may run (None: no limit); ``rng_seed`` seeds each entry's random
    streams from its key (None: fresh entropy); with ``log_threshold`` each entry's log records (at or above
    it) and its stdout/stderr are captured and travel back in its :class:`Outcome`; ``exported`` is the manager's
    dask config and environment variables, applied while the entries run."""

    stop_on_error: bool
    inline: dict[int, Any]
    entries: list[Entry]
    timeout: float | None = None
    rng_seed: int | None = None
    log_threshold: int | None = None
    exported: tuple[dict[str, Any], dict[str, str]] | None = None


class Outcome(NamedTuple):
    """What became of one entry: ``status`` is OK, ERROR (``error`` holds the pickled exception) or
    UNEVALUATED; ``nbytes`` is the size of the stored result; times are the worker's clock, in seconds; ``log``
    is the captured :class:`~dask_redisparam.logs.TaskLog`, if any."""

    idx: int
    status: int
    error: bytes | None
    nbytes: int
    start: float
    end: float
    log: Any = None


class Completion(NamedTuple):
    """A completion record: the message it answers, the worker that ran it and the outcomes."""

    msg_id: int
    attempt: int
    worker: str
    outcomes: list[Outcome]
    batch_error: bytes | None


def encode_task(run_id: str, msg_id: int, attempt: int, payload: bytes) -> bytes:
    """Wrap a pickled :class:`Batch` in the message envelope."""
    return b"%s|%s|%d|%d|%s" % (VERSION, run_id.encode(), msg_id, attempt, payload)


def decode_header(message: bytes) -> tuple[str, int, int, int]:
    """Return ``(run_id, msg_id, attempt, payload_offset)`` of a task message.

    Raises ``ValueError`` for anything that is not a message of this protocol version.
    """
    parts = message.split(b"|", 4)
    if len(parts) != 5 or parts[0] != VERSION:
        raise ValueError(f"not a task message of protocol {VERSION.decode()}: {message[:40]!r}")
    offset = len(message) - len(parts[4])
    return parts[1].decode(), int(parts[2]), int(parts[3]), offset


LOST = b"L|"


def encode_lost(msg_id: int, attempt: int, worker: str) -> bytes:
    """A notice, pushed to a run's ``done`` list, that a message was requeued after its worker died.

    Examples
    --------
    >>> decode_lost(encode_lost(3, 2, "w1"))
    (3, 2, 'w1')
    """
    return b"%s%d|%d|%s" % (LOST, msg_id, attempt, worker.encode())


def decode_lost(record: bytes) -> tuple[int, int, str]:
    """Inverse of :func:`encode_lost`: ``(msg_id, attempt, worker)``."""
    _, msg, attempt, worker = record.split(b"|", 3)
    return int(msg), int(attempt), worker.decode()


def dumps_completion(completion: Completion) -> bytes:
    """Pickle a completion record (plain data only)."""
    return pickle.dumps(tuple(completion), protocol=pickle.HIGHEST_PROTOCOL)


def loads_completion(data: bytes) -> Completion:
    """Inverse of :func:`dumps_completion`."""
    msg_id, attempt, worker, outcomes, batch_error = pickle.loads(data)
    return Completion(msg_id, attempt, worker, [Outcome(*o) for o in outcomes], batch_error)

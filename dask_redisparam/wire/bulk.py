"""Large values: pickle protocol 5 frames, stored as parts beside a small signed reference.

A value whose pickle would be large (:data:`LARGE_BYTES` or more) does not travel as one Redis string through
the completion script (where Redis and Lua would copy it several times, and one string holds at most 512 MB).
Instead:

- it is pickled with protocol 5 and out-of-band buffers: the pickle *header* is small and every contiguous
  buffer (a numpy array's memory, a ``bytearray``...) is referenced, not copied;
- header (unless small enough to travel inside the reference) and buffers are cut into *parts* of at most
  :data:`PART_BYTES`, written with plain ``HSET`` to fields ``~<token>.<n>`` of the run's data hash (``token``:
  ``<field>-<random>``, the value's own field first, so that the parts of a value can be found by its field (resume
  copies them with it, :mod:`dask_redisparam.manager.resume`), random per write, so that a late writer that lost
  its claim never overwrites a committed value; its parts are deleted by the completion script that refuses it);
- the value's own field holds a :class:`Ref` (sealed like any stored value): token, frame sizes, the embedded
  header and a Poly1305 tag over the parts (its one-time key derived from the shared secret and a random nonce,
  see :meth:`~dask_redisparam.wire.signing.Signer.bulk_authenticator`: 5-6 GB/s here, where HMAC-SHA256 does 2).

A reader fetches the reference, takes one buffer for all frames of the value (:class:`~.buffers.BufferPool`: a new
one from numpy's allocator, or in a worker one it kept), has the backend read every part straight into its place
(no intermediate copy), checks the tag part by part as the parts arrive (:class:`Targets`: while Redis sends the
next ones) and unpickles with the buffers in place: a numpy array comes back as a writable view of that buffer.

Examples
--------
>>> frames = Frames(b"header", [memoryview(b"x" * 10)])
>>> ref, parts = split(frames, None, b"job", token="t0")
>>> [(name, len(view)) for name, view in parts]
[('~t0.0', 10)]
>>> [(name, offset, size) for name, offset, size in layout(decode_ref(ref))]
[('~t0.0', 0, 10)]
"""

from __future__ import annotations

import pickle
import secrets
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from ..errors import PayloadRejected
from ..sentinels import MISSING
from .buffers import ALIGN, BufferPool
from .protocol import seal_value, unseal_value, unseal_values
from .signing import Signer

__all__ = [
    "LARGE_BYTES",
    "PART_BYTES",
    "POOL",
    "BufferPool",
    "Frames",
    "Part",
    "Ref",
    "Report",
    "Targets",
    "decode_ref",
    "is_ref",
    "layout",
    "load",
    "open_value",
    "open_values",
    "pack",
    "part_names",
    "split",
    "triage",
]

Part = tuple[str, memoryview]
"""A part to write: its field in the run's data hash, and a view of the bytes (no copy)."""
ReadParts = Callable[[Sequence[Part]], bool]
"""Fills each view with its field's bytes; False when a field is missing (see ``Backend.read_parts``). Given
:class:`Targets`, it calls their ``on_part`` with each part's index once the part is in place, in order."""
Name = TypeVar("Name")


class Targets(list[Part]):
    """The parts one read fills, and ``on_part(i)``, called by the reader once part ``i`` is in place (in order,
    while the next ones are still on their way): readers check each part's tag as it arrives.

    Examples
    --------
    >>> seen = []
    >>> targets = Targets([("~t.0", memoryview(bytearray(2)))], seen.append)
    >>> len(targets), targets.on_part is not None
    (1, True)
    >>> targets.on_part(0)
    >>> seen
    [0]
    """

    def __init__(self, parts: Sequence[Part] = (), on_part: Callable[[int], None] | None = None) -> None:
        super().__init__(parts)
        self.on_part = on_part


class Report(NamedTuple):
    """What a worker hands in for a message, stored atomically by ``Backend.complete``: the sealed completion
    record and the results, ``(field, sealed value)`` pairs (:func:`pack`); ``large`` the references of large values,
    whose ``parts`` are written first. ``ntasks`` is added to the worker's task count; ``stats`` are the
    message's task statistics, per key prefix (``dask_redisparam.backend.stats.TaskStats.arguments``).
    """

    jobname: str
    worker_id: str
    run_id: str
    message: bytes
    record: bytes
    values: Sequence[tuple[str, bytes]] = ()
    ntasks: int = 0
    large: Sequence[tuple[str, bytes]] = ()
    parts: Sequence[Part] = ()
    stats: Sequence[str | int] = ()


LARGE_BYTES = 1 << 20
"""Results at least this large (``dask.sizeof``, or pickled) are stored as parts."""
PART_BYTES = 4 << 20
"""The largest part: small enough for Redis to send without large reply buffers, large enough to be cheap."""
EMBED_BYTES = 64 << 10
"""A pickle header up to this size travels inside the reference."""
REF_MAGIC = b"R1\0"
"""How a reference starts (a pickle starts with ``\\x80``)."""


class Frames(NamedTuple):
    """A value pickled with protocol 5: the header and the out-of-band buffers it refers to (not copies)."""

    header: bytes
    buffers: list[memoryview]

    @property
    def nbytes(self) -> int:
        """Total size in bytes."""
        return len(self.header) + sum(len(b) for b in self.buffers)


class Ref(NamedTuple):
    """What a large value's field holds: where its parts are and how to check them."""

    token: str
    sizes: tuple[int, ...]
    header: bytes | None
    kid: str | None
    nonce: bytes
    tag: bytes | None

    @property
    def nbytes(self) -> int:
        """The value's size in bytes (header included)."""
        return sum(self.sizes) + len(self.header or b"")


def pack(blob: bytes | Frames, signer: Signer | None, jobname: str, field: int | str = "") -> tuple[bytes, list[Part]]:
    """What to store for a pickled value: the sealed field value, and the parts to write first (none for a small
    value, which is sealed whole); the parts' names begin with ``~<field>-``.

    Examples
    --------
    >>> pack(b"pickle", None, "job")
    (b'||pickle', [])
    """
    if not isinstance(blob, Frames):
        return seal_value(blob, signer, jobname), []
    POOL.note(blob.nbytes)
    ref, parts = split(blob, signer, jobname.encode(), token=f"{field}-{secrets.token_hex(8)}")
    return seal_value(ref, signer, jobname), parts


def open_value(sealed: bytes, signer: Signer | None, jobname: str, read_parts: ReadParts) -> Any:
    """The value of a stored field: checked, then unpickled; a large one read with ``read_parts`` first.

    Returns :data:`~dask_redisparam.sentinels.MISSING` when a part of a large value is gone; raises
    :class:`~dask_redisparam.errors.PayloadRejected` when a signature does not hold (nothing is unpickled).

    Examples
    --------
    >>> sealed, parts = pack(Frames(pickle.dumps(b"v" * 10, protocol=5), []), None, "job")
    >>> stored = {name: bytes(view) for name, view in parts}
    >>> def read_parts(targets):
    ...     for name, view in targets:
    ...         view[:] = stored[name]
    ...     return True
    >>> open_value(sealed, None, "job", read_parts)
    b'vvvvvvvvvv'
    """
    payload = unseal_value(sealed, signer, jobname)
    if is_ref(payload):
        return load(decode_ref(payload), signer, jobname.encode(), read_parts)
    return pickle.loads(payload)


def split(frames: Frames, signer: Signer | None, jobname: bytes, token: str | None = None) -> tuple[bytes, list[Part]]:
    """The reference payload (to seal as a value) and the parts (field name, view into the frames) to write.

    The tag covers every part in order (with ``signer``); without one there is none, as for other values.
    """
    token = token or secrets.token_hex(8)
    chunks: list[memoryview] = []
    embedded = frames.header if len(frames.header) <= EMBED_BYTES else None
    if embedded is None:
        chunks.append(memoryview(frames.header))
    chunks += [b.cast("B") if b.format != "B" or b.ndim != 1 else b for b in frames.buffers]
    nonce = secrets.token_bytes(16)
    mac = signer.bulk_authenticator(jobname, nonce) if signer is not None else None
    parts: list[Part] = []
    for chunk in chunks:
        for start in range(0, max(len(chunk), 1), PART_BYTES):
            view = chunk[start : start + PART_BYTES]
            if mac is not None:
                mac.update(view)
            parts.append((f"~{token}.{len(parts)}", view))
    ref = Ref(
        token,
        tuple(len(c) for c in chunks),
        embedded,
        signer.key_id if signer is not None else None,
        nonce,
        mac.finalize() if mac is not None else None,
    )
    return REF_MAGIC + pickle.dumps(tuple(ref), protocol=pickle.HIGHEST_PROTOCOL), parts


def is_ref(payload: bytes | memoryview) -> bool:
    """Whether an unsealed stored value is a :class:`Ref` (else it is a pickle)."""
    return bytes(payload[: len(REF_MAGIC)]) == REF_MAGIC


def decode_ref(payload: bytes | memoryview) -> Ref:
    """Inverse of the reference made by :func:`split` (call it only on an unsealed, i.e. checked, payload)."""
    return Ref(*pickle.loads(memoryview(payload)[len(REF_MAGIC) :]))


def part_names(ref: Ref) -> tuple[str, ...]:
    """The fields that hold the parts of ``ref``."""
    return tuple(name for name, _, _ in layout(ref))


def layout(ref: Ref) -> list[tuple[str, int, int]]:
    """``(field, offset in the reader's buffer, size)`` of every part, in order."""
    out: list[tuple[str, int, int]] = []
    offset = 0
    for size in ref.sizes:
        for start in range(0, max(size, 1), PART_BYTES):
            out.append((f"~{ref.token}.{len(out)}", offset + start, min(PART_BYTES, size - start)))
        offset += -(-size // ALIGN) * ALIGN
    return out


POOL = BufferPool()
"""The process's receive buffers; workers set ``POOL.keep``."""


def load(ref: Ref, signer: Signer | None, jobname: bytes, read_parts: ReadParts) -> Any:
    """Read a large value's parts with ``read_parts(targets) -> all found`` and unpickle it in place.

    Returns :data:`~dask_redisparam.sentinels.MISSING` when a part is gone. Raises
    :class:`~dask_redisparam.errors.PayloadRejected` when the tag does not match (nothing is unpickled).
    """
    opening = _Opening(ref, signer, jobname)
    if not _read([opening], read_parts):
        return MISSING
    return opening.load()


class _Opening:
    """One large value being read: its buffer, where its parts go, and the check of its tag, fed part by part as
    the reader reports them in place (the parts still on their way meanwhile), finished by :meth:`load`."""

    def __init__(self, ref: Ref, signer: Signer | None, jobname: bytes) -> None:
        self.mac: Any = None
        if signer is not None or ref.tag is not None:
            if signer is None:
                raise PayloadRejected("payload is signed but this process has no secret (set REDISPARAM_SECRET)")
            if ref.tag is None or ref.kid is None:
                raise PayloadRejected("large value is not signed")
            self.mac = signer.bulk_authenticator(jobname, ref.nonce, ref.kid)
        where = layout(ref)
        self.ref, self.checked = ref, 0
        self.buffer = POOL.take(max((offset + size for _, offset, size in where), default=0))
        self.targets = [(name, self.buffer[offset : offset + size]) for name, offset, size in where]

    def check(self, upto: int) -> None:
        """Feed the tag check with the parts before ``upto`` not fed yet."""
        if self.mac is not None:
            for _, view in self.targets[self.checked : upto]:
                self.mac.update(view)
        self.checked = max(self.checked, upto)

    def load(self) -> Any:
        """Check the tag over all parts, then unpickle with the frames in place."""
        self.check(len(self.targets))
        if self.mac is not None:
            try:
                self.mac.verify(self.ref.tag)
            except Exception:
                raise PayloadRejected(f"bad signature on a large value's parts (key id {self.ref.kid!r})") from None
        frames, offset = [], 0
        for size in self.ref.sizes:
            frames.append(self.buffer[offset : offset + size])
            offset += -(-size // ALIGN) * ALIGN
        header = self.ref.header if self.ref.header is not None else frames.pop(0)
        return pickle.loads(header, buffers=frames)


def _read(openings: Sequence[_Opening], read_parts: ReadParts) -> bool:
    """Read the parts of all ``openings`` in one call, each part's tag checked once it is in place."""
    owners = [(o, n) for o in openings for n in range(1, len(o.targets) + 1)]

    def on_part(index: int) -> None:
        opening, upto = owners[index]
        opening.check(upto)

    return read_parts(Targets([target for o in openings for target in o.targets], on_part))


def open_values(
    stored: Sequence[bytes | None], signer: Signer | None, jobname: str, read_parts: ReadParts
) -> list[Any]:
    """Like :func:`open_value` for several fields, with the parts of all large ones read in one call.

    Each item is the value, :data:`~dask_redisparam.sentinels.MISSING` (the field or a part is gone) or the
    :class:`~dask_redisparam.errors.PayloadRejected` error that refused it (nothing of it unpickled, nor read).

    Examples
    --------
    >>> open_values([pack(pickle.dumps(1), None, "job")[0], None], None, "job", lambda targets: True)
    [1, <MISSING>]
    """
    out: list[Any] = [MISSING] * len(stored)
    large: list[tuple[int, _Opening]] = []
    for i, payload in enumerate(unseal_values(stored, signer, jobname)):
        if payload is None:
            continue
        if isinstance(payload, PayloadRejected):
            out[i] = payload
        elif payload[:3] == REF_MAGIC:  # is_ref
            try:
                large.append((i, _Opening(decode_ref(payload), signer, jobname.encode())))
            except PayloadRejected as e:
                out[i] = e
        else:
            out[i] = pickle.loads(payload)
    if large and _read([o for _, o in large], read_parts):
        for i, opening in large:
            try:
                out[i] = opening.load()
            except PayloadRejected as e:
                out[i] = e
    return out


def triage(names: Sequence[Name], opened: Sequence[Any], into: dict[Name, Any]) -> dict[Name, PayloadRejected | None]:
    """Sort what :func:`open_values` returned for ``names``: the values go ``into`` the dict, and the names that
    have none are returned in order, each with the error that refused its value, or None when it is gone.

    Examples
    --------
    >>> found = {}
    >>> triage(["a", "b", "c"], [1, MISSING, PayloadRejected("bad")], found)
    {'b': None, 'c': PayloadRejected('bad')}
    >>> found
    {'a': 1}
    """
    failed: dict[Name, PayloadRejected | None] = {}
    for name, value in zip(names, opened, strict=True):
        if isinstance(value, PayloadRejected):
            failed[name] = value
        elif value is MISSING:
            failed[name] = None
        else:
            into[name] = value
    return failed

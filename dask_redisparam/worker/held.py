"""Reading values kept in Redis (persisted, published) from inside a task: :func:`load_held`.

A persisted collection's graph holds, for each of its keys, a task ``load_held(ref)`` where ``ref`` is a small
:class:`HeldRef` (job, the key of the hash that holds the values, the field). In a worker of the job the task reads
the value with the worker's connection and keeps it in the worker's cache (:mod:`.cache`), so that later tasks of
that worker take it from memory; the manager never sees it.

Run by another scheduler (dask's threads or sync), in a process that is no worker of the job, the task connects
itself, through the source that the param registered for the job (:func:`register_source`), and warns once per
holder (:class:`~dask_redisparam.errors.PersistedDownloadWarning`): every value is downloaded into that process.

A :class:`HeldRef` may carry its holder (an object whose life keeps the values in Redis, see
:mod:`dask_redisparam.param_data`); pickling drops it, so the graphs that travel stay small and the holder stays in
the process that persisted.

Examples
--------
>>> ref = HeldRef("demo", "drp:{demo}:held:ab", 3, 80, holder=object())
>>> import pickle
>>> pickle.loads(pickle.dumps(ref))
HeldRef('demo', 'drp:{demo}:held:ab', 3, nbytes=80)
>>> pickle.loads(pickle.dumps(ref)).holder is None
True
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import warnings
from typing import Any

from ..backend import Backend
from ..config.address import RedisAddress
from ..errors import HeldValuesLost, PersistedDownloadWarning
from ..sentinels import MISSING
from ..wire.bulk import open_value
from ..wire.signing import Signer
from .cache import ValueCache

__all__ = ["HeldRef", "load_held", "read_held", "register_source", "serving"]


class HeldRef:
    """Where one kept value is: its job, the hash that holds it, its field, its size in bytes, and the run that
    computed it (``origin``: the worker that did may still have it in its cache, under that run and field).

    ``holder`` (not pickled) is whatever keeps the values alive in this process while the ref is referenced.
    """

    __slots__ = ("field", "holder", "job", "key", "nbytes", "origin")

    def __init__(self, job: str, key: str, field: int, nbytes: int, holder: object = None, origin: str = "") -> None:
        self.job, self.key, self.field, self.nbytes, self.holder = job, key, field, nbytes, holder
        self.origin = origin

    def __reduce__(self) -> tuple[Any, ...]:
        return (HeldRef, (self.job, self.key, self.field, self.nbytes, None, self.origin))

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return (self.job, self.key, self.field)

    def __repr__(self) -> str:
        return f"HeldRef({self.job!r}, {self.key!r}, {self.field}, nbytes={self.nbytes})"


@dataclasses.dataclass
class _Serving:
    jobname: str
    backend: Backend
    signer: Signer | None
    cache: ValueCache


@dataclasses.dataclass
class _Source:
    address: RedisAddress
    signer: Signer | None
    backend: Backend | None = None


_serving: _Serving | None = None
_sources: dict[str, _Source] = {}
_warned: set[str] = set()
_lock = threading.Lock()


def serving(
    jobname: str | None, backend: Backend | None = None, signer: Signer | None = None, cache: Any = None
) -> None:
    """Called by a worker: its tasks of ``jobname`` read kept values with ``backend`` into ``cache`` (None: the
    worker stopped)."""
    global _serving
    if jobname is None or backend is None:
        _serving = None
    else:
        _serving = _Serving(jobname, backend, signer, cache)


def register_source(jobname: str, address: RedisAddress, signer: Signer | None) -> None:
    """Called by a param that persisted or read a dataset: where this process reads kept values of ``jobname``
    when they are computed by another scheduler."""
    with _lock:
        known = _sources.get(jobname)
        if known is None or known.address != address or known.signer is not signer:
            _sources[jobname] = _Source(address, signer)


def load_held(ref: HeldRef) -> Any:
    """The value ``ref`` points to: read by the worker (and kept in its cache), or, outside a worker of the job,
    downloaded with a connection of this process (with a warning, once per holder)."""
    now = _serving
    if now is not None and now.jobname == ref.job:
        for where in (ref.key, ref.origin):  # read before, or made here by the run that persisted it
            cached = now.cache.take(where, {ref.field}) if where else {}
            if cached:
                return cached[ref.field]
        value = read_held(now.backend, now.signer, ref)
        now.cache.put(ref.key, ref.field, value, ref.nbytes)
        return value
    with _lock:
        source = _sources.get(ref.job)
        if source is None:
            raise HeldValuesLost(
                f"this process has no connection to job {ref.job!r}: compute a persisted collection or dataset with "
                "its RedisParam (or start a RedisParam on that job in this process)"
            )
        if ref.key not in _warned:
            _warned.add(ref.key)
            warnings.warn(
                f"computing values persisted in Redis (job {ref.job!r}) with another scheduler: each one is "
                "downloaded into this process; compute with the RedisParam to read them in its workers",
                PersistedDownloadWarning,
                stacklevel=2,
            )
        if source.backend is None:
            source.backend = Backend.connect(source.address)
        backend, signer = source.backend, source.signer
    return read_held(backend, signer, ref)


def read_held(backend: Backend, signer: Signer | None, ref: HeldRef) -> Any:
    """Download the value ``ref`` points to with ``backend`` (its parts straight into one buffer), checked with
    ``signer``; :class:`~dask_redisparam.errors.HeldValuesLost` if it is gone."""
    [sealed] = backend.fetch_held(ref.key, [str(ref.field)])
    value = MISSING
    if sealed is not None:
        value = open_value(sealed, signer, ref.job, functools.partial(backend.read_parts_from, ref.key))
    if value is MISSING:
        raise HeldValuesLost(
            f"the kept value {ref.field} of {ref.key} is gone from Redis at {backend.address.describe()} (released, "
            "lease expired, unpublished, or the server restarted without persistence)"
        )
    return value

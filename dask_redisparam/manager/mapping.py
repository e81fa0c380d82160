"""BiocParallel's ``bplapply``/``bpmapply`` (:func:`map_elements`) and ``bpiterate`` (:func:`iterate_elements`).

Both run on a started :class:`~dask_redisparam.RedisParam` and keep BiocParallel's promises:

- results come back in input order (``iterate`` without ``reduce``: in submission order);
- an element's failure is recorded per element: with ``stop_on_error`` the rest of its chunk is not evaluated
  and no new chunk is sent; without it every element runs. Failures raise as for a compute: the first element's
  exception (``stop_on_error``) or :class:`~dask_redisparam.errors.TaskErrors`, keyed by element index, with
  ``results``, ``errors``, ``unevaluated`` and ``redo``; ``return_exceptions=True`` puts them in the list instead;
- with ``rng_seed``, element ``i`` draws from the stream of ``(rng_seed, ("element", i))``, whatever the
  chunking;
- ``redo=err`` re-runs only the elements that failed or were not evaluated;
- with a ``resultdir``, a map's chunks and an iterate's items are saved as they finish (those without a failed
  element), named after their task identity, and not computed again by a later call, in this or another process,
  on the same inputs (a map with ``tasks=0`` chunks by the number of workers: its chunks match only for as many).

``tasks`` (map): None, one element per task (the manager still batches small tasks into messages, and workers
that join later get work); 0, one chunk per live worker; n, n chunks (at most one per element).
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable, Hashable, Iterable, Sized
from typing import TYPE_CHECKING, Any

from dask._task_spec import Task

from ..errors import (
    ChunkFailed,
    ConfigurationError,
    PartialResults,
    RedisParamError,
    StreamStopped,
    Unevaluated,
    raise_partial,
)
from ..progress import make_progress
from ..rng import seed_task
from ..sentinels import MISSING
from ..wire.protocol import ERROR, OK, UNEVALUATED
from ..wire.serialize import dumps_exception, loads_exception, make_remote
from .identity import task_identities
from .resources import class_of
from .state import RunState

if TYPE_CHECKING:
    from ..param_scheduling import ParamScheduler
    from ..resultdir import ResultDir

__all__ = ["MapRedo", "iterate_elements", "map_elements", "run_chunk", "split_indices"]


@dataclasses.dataclass(frozen=True)
class MapRedo:
    """What ``redo=`` needs for a map or iterate: the number of elements and the results that were computed."""

    n: int
    results: dict[int, Any]


def run_chunk(
    func: Callable[..., Any], kwargs: dict[str, Any], start: int, elements: list[tuple[Any, ...]], seed: Any
) -> list[tuple[Any, ...]]:
    """Run ``func`` on each element of a chunk (on a worker); ``seed`` is ``(rng_seed, stop_on_error)``.

    Returns one ``(OK, value)``, ``(ERROR, pickled exception)`` or ``(UNEVALUATED,)`` per element.
    """
    rng_seed, stop_on_error = seed
    out: list[tuple[Any, ...]] = []
    failed = False
    for i, args in enumerate(elements, start=start):
        if failed and stop_on_error:
            out.append((UNEVALUATED,))
            continue
        if rng_seed is not None:
            seed_task(rng_seed, ("element", i))
        try:
            out.append((OK, func(*args, **kwargs)))
        except Exception as e:
            failed = True
            out.append((ERROR, dumps_exception(e, e.__traceback__)))
    if failed and stop_on_error:
        raise ChunkFailed(out)
    return out


def split_indices(indices: list[int], nchunks: int) -> list[list[int]]:
    """Split ``indices`` into ``nchunks`` near-equal contiguous chunks (``parallel::splitIndices``).

    Examples
    --------
    >>> split_indices(list(range(7)), 3)
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    nchunks = max(1, min(nchunks, len(indices)))
    size, extra = divmod(len(indices), nchunks)
    out, pos = [], 0
    for k in range(nchunks):
        n = size + (1 if k < extra else 0)
        out.append(indices[pos : pos + n])
        pos += n
    return out


def map_elements(
    param: ParamScheduler,
    func: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    *,
    tasks: int | None,
    kwargs: dict[str, Any],
    redo: Any = None,
    return_exceptions: bool = False,
    resources: Any = None,
) -> list[Any]:
    """``param.map``: see :meth:`RedisParam.map`."""
    if not iterables:
        raise ConfigurationError("map() needs at least one iterable of inputs")
    elements = list(zip(*iterables, strict=False))
    previous = _previous(redo, len(elements))
    todo = [i for i in range(len(elements)) if i not in previous]
    if tasks is None:
        nchunks = len(todo)
    elif isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 0:
        raise ConfigurationError(f"tasks={tasks!r} must be None, 0 or a positive integer")
    else:
        nchunks = tasks or max(1, len(param.worker_ids()))
    name = f"map-{uuid.uuid4()}"  # a random token: the tasks' identities come from what they compute
    settings = param.settings
    dsk: dict[Hashable, Any] = {}
    for k, chunk in enumerate(split_indices(todo, nchunks) if todo else []):
        # a chunk never spans a gap left by elements a redo skips: it covers contiguous indices only
        for run in _contiguous(chunk):
            key = (name, k, run[0])
            dsk[key] = Task(
                key,
                run_chunk,
                func,
                kwargs,
                run[0],
                [elements[i] for i in run],
                (settings.rng_seed, settings.stop_on_error),
            )
    outcomes: dict[int, tuple[Any, ...]] = {i: (OK, v) for i, v in previous.items()}
    if dsk:
        extra = {} if resources is None else {"resources": resources}
        computed = param.get(dsk, list(dsk), return_exceptions=True, save_if=_all_ok, **extra)
        ran_on = {record.key: record.worker for record in param.timeline()}
        for chunk_key, value in zip(dsk, computed, strict=True):
            assert isinstance(chunk_key, tuple)
            start, count = chunk_key[2], len(dsk[chunk_key].args[3])
            for i, outcome in enumerate(_chunk_outcomes(value, count, ran_on.get(chunk_key, "")), start=start):
                outcomes[i] = outcome
    return _collect(outcomes, len(elements), settings.stop_on_error, return_exceptions)


def _all_ok(value: Any) -> bool:
    """Whether a chunk's value holds no failed element (only those are saved in a ``resultdir``)."""
    return isinstance(value, list) and all(outcome[0] == OK for outcome in value)


def _contiguous(chunk: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in chunk:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _chunk_outcomes(value: Any, count: int, worker: str) -> list[tuple[Any, ...]]:
    """A chunk's per-element outcomes, also when the chunk as a whole failed or never ran; an ERROR outcome gets
    the id of the worker that ran the chunk as a third item."""
    worker = getattr(value, "worker", None) or worker  # a failed chunk knows its worker
    if isinstance(value, ChunkFailed):
        outcomes = value.outcomes
    elif isinstance(value, Unevaluated):
        return [(UNEVALUATED,)] * count
    elif isinstance(value, BaseException):  # the chunk was lost (KilledWorker, TaskTimeout...): so are its elements
        outcomes = [(ERROR, dumps_exception(value, None))] * count
    else:
        outcomes = list(value)
    return [(ERROR, o[1], worker) if o[0] == ERROR else o for o in outcomes]


def _previous(redo: Any, n: int) -> dict[int, Any]:
    if redo is None:
        return {}
    info = getattr(redo, "redo", redo)
    if not isinstance(info, MapRedo):
        raise ConfigurationError("redo= must be the exception that a failed map() or iterate() raised")
    if info.n != n:
        raise ConfigurationError(f"redo= comes from {info.n} elements; this call has {n}: they must be equal")
    if len(info.results) == n:
        raise ConfigurationError("redo= holds no failed or unevaluated element: nothing to redo")
    return info.results


def _collect(outcomes: dict[int, tuple[Any, ...]], n: int, stop_on_error: bool, return_exceptions: bool) -> list[Any]:
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}
    for i in range(n):
        outcome = outcomes.get(i, (UNEVALUATED,))
        if outcome[0] == OK:
            results[i] = outcome[1]
        elif outcome[0] == ERROR:
            exc, tb, text = loads_exception(outcome[1])
            errors[i] = make_remote(exc, i, outcome[2] if len(outcome) > 2 else "", text).with_traceback(tb)
    if len(results) == n:
        return [results[i] for i in range(n)]
    unevaluated = [i for i in range(n) if i not in results and i not in errors]
    if return_exceptions:
        return [results[i] if i in results else errors.get(i) or Unevaluated(i) for i in range(n)]
    first = next(iter(errors.values()), None) if stop_on_error else None
    raise_partial(errors, results, unevaluated, MapRedo(n, results), first)


def iterate_elements(
    param: ParamScheduler,
    iterator: Iterable[Any],
    func: Callable[..., Any],
    *,
    reduce: Callable[[Any, Any], Any] | None,
    init: Any,
    in_order: bool,
    kwargs: dict[str, Any],
    redo: Any = None,
    return_exceptions: bool = False,
    saved: ResultDir | None = None,
    resources: Any = None,
) -> Any:
    """``param.iterate``: see :meth:`RedisParam.iterate`; ``saved`` is the param's ``resultdir``, if any."""
    settings = param.settings
    items = iter(iterator)
    previous = getattr(redo, "redo", redo)
    if redo is not None and not isinstance(previous, MapRedo):
        raise ConfigurationError("redo= must be the exception that a failed map() or iterate() raised")
    done_before = previous.results if isinstance(previous, MapRedo) else {}
    if resources is not None:
        class_of("iterate", resources)  # a malformed value raises before anything runs
    name = f"iterate-{uuid.uuid4()}"  # a random token: the tasks' identities come from what they compute
    identities: dict[Hashable, bytes | None] = {}  # with a resultdir: key -> identity of the items sent
    counter = itertools.count()
    read, pulled, handled = [0], [0], [0]  # items read, sent (in flight until handled)
    outcomes: dict[int, tuple[Any, ...]] = {}
    folder = _Folder(reduce, init, in_order)
    progress = make_progress(None, "iterate") if settings.progressbar else None

    def record(i: int, outcome: tuple[Any, ...]) -> None:
        outcomes[i] = outcome
        folder.add(i, outcome)
        if progress is not None:
            progress.update(1)

    runs: list[RunState] = []

    def feed(run: RunState) -> bool:
        runs[:] = [run]
        while pulled[0] - handled[0] < max(run.window, 1):
            item = next(items, MISSING)
            if item is MISSING:
                return False
            i = next(counter)
            read[0] += 1
            if i in done_before:  # a redo: this item's result is kept; the item is read only to keep the count
                record(i, (OK, done_before[i]))
                continue
            key = (name, i)
            task = Task(key, run_chunk, func, kwargs, i, [(item,)], (settings.rng_seed, False))
            identity, adopted = None, None
            if saved is not None or run.options.resume_ttl > 0:
                identity = task_identities({key: task}, [key]).of.get(key)
            if saved is not None:
                if saved.has(key, identity):  # computed before, by this or another process
                    (outcome,) = _chunk_outcomes(saved.load(key, identity), 1, "")
                    record(i, outcome)
                    continue
                identities[key] = identity
            resumer = run.options.resumer
            if resumer is not None:  # its value may be left by a dead run of the same iterate
                adopted = resumer.match(key, identity)
            run.add_task(key, task, identity=identity, adopted=adopted, resources=resources)
            pulled[0] += 1
        return True

    def on_result(key: Hashable, value: Any) -> None:
        handled[0] += 1
        assert isinstance(key, tuple)
        stored = runs[0].state["cache"].get(key) if runs else None  # which worker ran it
        (outcome,) = _chunk_outcomes(value, 1, getattr(stored, "worker", ""))
        if saved is not None and outcome[0] == OK:
            saved.save(key, value, identities.pop(key, None))
        record(key[1], outcome)
        if outcome[0] != OK and settings.stop_on_error:
            raise _StopIteration

    try:
        param.stream({}, on_result=on_result, feed=feed)
    except _StopIteration:
        pass
    finally:
        if progress is not None:
            progress.close()
    resumer = runs[0].options.resumer if runs else None
    if resumer is not None:
        resumer.report(pulled[0] - len(resumer.adopted), needed=pulled[0])
    # an input of known length (as R's bpiterateAlong) reports the items not read after a stop as unevaluated
    n = max(read[0], len(iterator)) if isinstance(iterator, Sized) else read[0]
    if reduce is None:
        return _collect(outcomes, n, settings.stop_on_error, return_exceptions)
    if all(outcomes.get(i, (None,))[0] == OK for i in range(n)):
        return folder.value()
    try:  # errors are never folded: raise them, with what was folded so far as ``reduced``
        _collect(outcomes, n, settings.stop_on_error, False)
    except RedisParamError as e:
        if isinstance(e, PartialResults):
            e.reduced = folder.value()
        raise
    raise AssertionError("unreachable: _collect raises when an element failed")


class _StopIteration(StreamStopped):
    """An element failed and ``stop_on_error`` holds: stop feeding and end the run."""


class _Folder:
    """Folds iterate's results with ``reduce``, as they arrive or in order; errors are never folded."""

    def __init__(self, reduce: Callable[[Any, Any], Any] | None, init: Any, in_order: bool) -> None:
        self.reduce, self.acc, self.in_order = reduce, init, in_order
        self.pending: dict[int, tuple[Any, ...]] = {}
        self.next = 0
        self.blocked = False

    def add(self, i: int, outcome: tuple[Any, ...]) -> None:
        if self.reduce is None:
            return
        if not self.in_order:
            self._fold(outcome)
            return
        self.pending[i] = outcome
        while self.next in self.pending and not self.blocked:
            self._fold(self.pending.pop(self.next))
            self.next += 1

    def _fold(self, outcome: tuple[Any, ...]) -> None:
        assert self.reduce is not None
        if outcome[0] != OK:
            self.blocked = self.in_order  # in order, reduction stops at the first error
            return
        self.acc = outcome[1] if self.acc is MISSING else self.reduce(self.acc, outcome[1])

    def value(self) -> Any:
        return None if self.acc is MISSING else self.acc

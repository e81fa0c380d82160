"""Running the entries of one batch on a worker: inputs in, outcomes and pickled results out.

Each entry is called as ``node({input key: value})``. Whatever an entry raises becomes an ERROR outcome, except:

- :class:`~dask_redisparam.errors.StopRequested` (a cold stop) propagates;
- ``SystemExit`` raised by a task ends the worker process at once (exit code 70), as a crash would: its
  supervisor requeues the message counting one failed attempt, so ``sys.exit()`` in a task behaves like
  ``os._exit()``, a segfault or an OOM kill (retried, then ``KilledWorker``).

With a ``timeout``, a task that runs too long is interrupted by ``SIGALRM`` (a TaskTimeout ERROR, the worker goes
on); code stuck in C, which no signal interrupts, is killed by the worker's supervisor, to which the
:class:`Watchdog` reports each task's deadline through a pipe.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import dask.config

from ..errors import SerializationError, ServerError, StopRequested, TaskTimeout
from ..logs import capture_task_output
from ..rng import seed_task
from ..wire.bulk import Frames
from ..wire.protocol import ERROR, OK, UNEVALUATED, Batch, Entry, Outcome, call_entry
from ..wire.serialize import dumps_exception, dumps_result

__all__ = ["EXIT_TASK_EXITED", "WATCHDOG_ENV", "Running", "Watchdog", "apply_globals", "run_batch"]

logger = logging.getLogger(__name__)

WATCHDOG_ENV = "REDISPARAM_WATCHDOG_FD"
"""Environment variable holding the file descriptor on which a worker reports deadlines to its supervisor."""
EXIT_TASK_EXITED = 70
"""Exit code of a worker process whose task called ``sys.exit()``."""


class Watchdog:
    """The write end of the pipe to the supervisor: a line ``<monotonic deadline> <limit>`` when a task starts,
    ``0 0`` when it ends. Without a supervisor (no :data:`WATCHDOG_ENV`), it does nothing."""

    def __init__(self) -> None:
        fd = os.environ.get(WATCHDOG_ENV)
        self.fd = int(fd) if fd else None

    def report(self, deadline: float, limit: float) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, b"%.3f %.3f\n" % (deadline, limit))
            except OSError:  # the supervisor is gone; the process will be gone soon as well
                self.fd = None


class Running:
    """The dask key of the entry a worker runs now (None between batches): :func:`run_batch` sets it, the heartbeat
    thread reads it (one attribute store per entry; the worker's record shows its prefix).

    Examples
    --------
    >>> running = Running()
    >>> running.key is None
    True
    """

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key: Any = None


@contextmanager
def time_limit(key: Any, seconds: float | None, watchdog: Watchdog) -> Iterator[None]:
    """Raise :class:`TaskTimeout` in the task after ``seconds`` (main thread only), and tell the supervisor."""
    if seconds is None:
        yield
        return
    main = threading.current_thread() is threading.main_thread()

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeout(key, seconds)

    previous = signal.signal(signal.SIGALRM, expire) if main else None
    if main:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    watchdog.report(time.monotonic() + seconds, seconds)
    try:
        yield
    finally:
        watchdog.report(0.0, 0.0)
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def run_batch(
    batch: Batch, values: dict[int, Any], missing: set[int], watchdog: Watchdog, running: Running | None = None
) -> tuple[list[Outcome], list[tuple[str, bytes | Frames]]]:
    """Run the entries of ``batch`` in order; ``values`` holds the inputs by field (and receives the results).

    Returns the outcomes and the ``(field, pickled result)`` pairs to store (:class:`~dask_redisparam.wire.bulk.Frames`
    for a large result). The caller applies the manager's exported globals around it (:func:`apply_globals`),
    from before the batch is unpickled. ``running.key`` holds the key of the entry being run, None after.
    """
    running = running or Running()
    try:
        return _run_entries(batch, values, missing, watchdog, running)
    finally:
        running.key = None


@contextmanager
def apply_globals(exported: tuple[dict[str, Any], dict[str, str]] | None) -> Iterator[None]:
    """Apply the manager's dask config and environment variables meanwhile; restore ours after.

    Examples
    --------
    >>> with apply_globals(({"drp-doc": {"answer": 42}}, {})):
    ...     dask.config.get("drp-doc.answer")
    42
    >>> dask.config.get("drp-doc.answer", None) is None
    True
    """
    if exported is None:
        yield
        return
    config, env = exported
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with dask.config.set(config):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_entries(
    batch: Batch, values: dict[int, Any], missing: set[int], watchdog: Watchdog, running: Running
) -> tuple[list[Outcome], list[tuple[str, bytes | Frames]]]:
    outcomes: list[Outcome] = []
    stores: list[tuple[str, bytes | Frames]] = []
    failed: set[int] = set()
    stop_on_error, threshold, clock, new = batch.stop_on_error, batch.log_threshold, time.time, tuple.__new__
    for entry in batch.entries:
        start = clock()
        if failed and (stop_on_error or any(i in failed for _, i in entry.deps)):
            failed.add(entry.idx)
            outcomes.append(new(Outcome, (entry.idx, UNEVALUATED, None, 0, start, start, None, ())))
            continue
        running.key = entry.key
        if threshold is None:  # no capture: no context manager to enter per task
            status, error, nbytes = _attempt(entry, batch, values, missing, watchdog, stores, failed)
            kept = None
        else:
            with capture_task_output(threshold) as log:
                status, error, nbytes = _attempt(entry, batch, values, missing, watchdog, stores, failed)
            kept = None if log.empty else log
        outcomes.append(new(Outcome, (entry.idx, status, error, nbytes, start, clock(), kept, ())))
    return outcomes, stores


def _attempt(
    entry: Entry,
    batch: Batch,
    values: dict[int, Any],
    missing: set[int],
    watchdog: Watchdog,
    stores: list[tuple[str, bytes | Frames]],
    failed: set[int],
) -> tuple[int, bytes | None, int]:
    """Run one entry: ``(status, pickled error or None, stored bytes)``."""
    try:
        seed_task(batch.rng_seed, entry.key, entry.identity)
        return OK, None, _run_entry(entry, values, missing, batch.timeout, watchdog, stores)
    except StopRequested:
        raise
    except SystemExit as e:
        logger.error("task %r called sys.exit(%s): the worker process ends as a crash", entry.key, e.code)
        os._exit(EXIT_TASK_EXITED)
    except BaseException as e:  # noqa: B036 - a task's failure, whatever it is, is reported
        failed.add(entry.idx)
        return ERROR, dumps_exception(e, e.__traceback__), 0


def _run_entry(
    entry: Entry,
    values: dict[int, Any],
    missing: set[int],
    timeout: float | None,
    watchdog: Watchdog,
    stores: list[tuple[str, bytes | Frames]],
) -> int:
    lost = [key for key, i in entry.deps if i in missing] if missing else None
    if lost:
        raise ServerError(f"input(s) {lost!r} of task {entry.key!r} are missing from Redis (was the server restarted?)")
    inputs = {key: values[i] for key, i in entry.deps}
    node = entry.node
    if timeout is None:
        result = call_entry(node, inputs) if type(node) is tuple else node(inputs)
    else:
        with time_limit(entry.key, timeout, watchdog):
            result = call_entry(node, inputs) if type(node) is tuple else node(inputs)
    values[entry.idx] = result
    if not entry.store:
        return 0
    try:
        blob = dumps_result(result)
    except Exception as e:
        raise SerializationError(
            f"cannot pickle the result of task {entry.key!r} ({type(result).__name__}): {e}"
        ) from e
    stores.append((str(entry.idx), blob))
    return blob.nbytes if isinstance(blob, Frames) else len(blob)

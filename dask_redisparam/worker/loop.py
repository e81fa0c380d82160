"""The worker: claim a task message, fetch its inputs, run it, store the results, report; repeat.

One :class:`Worker` is one process serving one jobname. Its life::

    register (fails if a live worker has the same id)
      └─ loop: claim ──► load inputs ──► run entries ──► complete (store + report + release, atomically)
    deregister (messages still held go back to the queue)

Claiming moves the message into the worker's own processing list (``BLMOVE``), so a claimed task always sits in a
Redis key: never only in a worker's memory. A heartbeat thread renews the worker's lease every
``heartbeat_interval`` seconds.

Signals: the first SIGTERM or SIGINT asks for a *warm* stop: an idle worker stops at once, a busy one finishes
its current message first. A second signal stops it *cold*: the current message goes back to the queue.

Run it with the ``dask-redisparam-worker`` command (:mod:`dask_redisparam.cli`) or
``python -m dask_redisparam.worker`` (:mod:`dask_redisparam.worker.__main__`).

Examples
--------
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     w = Worker(server.address, "doc-job", burst=True)
...     w.run()
0
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType
from typing import Any

from ..backend import TRANSIENT_ERRORS, Backend
from ..config.address import RedisAddress
from ..config.schema import setting
from ..errors import (
    PayloadRejected,
    PersistenceFailed,
    ServerOutOfMemory,
    ServerReadOnly,
    ServerUnavailable,
    StopRequested,
    WorkerConflict,
)
from ..rng import reseed_from_entropy
from ..sentinels import FROM_ENVIRONMENT
from ..wire.bulk import Frames, Part, Report, open_values, pack, triage
from ..wire.protocol import (
    REJECTION_REASONS,
    Batch,
    Completion,
    classify_rejection,
    decode_header,
    dumps_completion,
    encode_rejected,
    open_task,
    split_payload,
)
from ..wire.serialize import dumps_exception, loads
from ..wire.signing import Signer, signer_from_environment
from .cache import CACHE_BYTES, ValueCache
from .execute import Watchdog, apply_globals, run_batch

__all__ = ["Worker", "new_worker_id"]

logger = logging.getLogger(__name__)


REPORT_GRACE = 120.0
"""Seconds a worker keeps trying to report a finished message to an unreachable Redis before it gives up."""

REFUSING_WRITES = (ServerOutOfMemory, PersistenceFailed, ServerReadOnly)
"""A server that refuses writes for now (memory full, a failed RDB snapshot, a failover that made it a replica):
the worker waits for it, as for a lost connection, with a warning every :data:`REFUSAL_WARNING` seconds."""
REFUSAL_WARNING = 10.0
_REPORT_RETRIED: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, PersistenceFailed, ServerReadOnly)


def new_worker_id() -> str:
    """A fresh random worker id (10 hex digits, as RedisParam's ids)."""
    return uuid.uuid4().hex[:10]


class Worker:
    """A worker process's loop.

    Parameters
    ----------
    address : RedisAddress
        The Redis server.
    jobname : str
        The job whose queue it serves.
    worker_id : str, optional
        Its id; default ``REDISPARAM_ID`` or a random one.
    heartbeat_interval, heartbeat_ttl : float
        Seconds between lease renewals, and the lease length (default: the settings table's).
    burst : bool
        Stop as soon as the queue is empty.
    max_tasks : int, optional
        Stop after this many task messages.
    signer : Signer or None
        Checks and makes signatures; default from ``REDISPARAM_SECRET`` / ``REDISPARAM_SECRET_FILE`` (none: only
        unsigned tasks are accepted).
    connect_timeout : float or None
        Seconds :meth:`run` waits for a server that cannot be reached yet (None: until it answers; default 0: fail
        at once); see :meth:`Backend.connect <dask_redisparam.backend.Backend.connect>`.
    """

    def __init__(
        self,
        address: RedisAddress,
        jobname: str,
        worker_id: str | None = None,
        *,
        heartbeat_interval: float = setting("heartbeat_interval").default,
        heartbeat_ttl: float = setting("heartbeat_ttl").default,
        burst: bool = False,
        max_tasks: int | None = None,
        signer: Signer | None | object = FROM_ENVIRONMENT,
        connect_timeout: float | None = 0.0,
    ) -> None:
        self.address = address
        self.jobname = jobname
        self.id = worker_id or os.environ.get("REDISPARAM_ID") or new_worker_id()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.burst = burst
        self.max_tasks = max_tasks
        self.connect_timeout = connect_timeout
        self.tasks_done = 0
        self.messages_done = 0
        self._backend: Backend | None = None
        self._stop = threading.Event()
        self._signals = 0
        self._busy = False
        self._current = ""
        self._recover = False  # a lost reply may have left a claimed message in our processing list
        self._watchdog = Watchdog()
        self._cache = ValueCache(CACHE_BYTES)
        self._rejected = 0  # messages refused in a row (they slow this worker down; see _reject)
        self._globals = contextlib.ExitStack()  # the exported globals of the message being processed
        self.signer: Signer | None = signer_from_environment() if signer is FROM_ENVIRONMENT else signer  # type: ignore[assignment]

    # ---------------------------------------------------------------- lifecycle
    def info(self) -> dict[str, str]:
        """The fields of the worker's registration."""
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started": f"{time.time():.3f}",
            "tasks": str(self.tasks_done),
            "current": self._current,
            "heartbeat": f"{time.time():.3f}",
        }

    def request_stop(self) -> None:
        """Ask for a warm stop (the current message is finished first)."""
        self._stop.set()

    def run(self) -> int:
        """Serve until stopped; return the number of tasks run."""
        backend = self._backend = Backend.connect(self.address, wait=self.connect_timeout)
        backend.check_job_access(self.jobname)
        if not backend.register_worker(self.jobname, self.id, self.info(), self.heartbeat_ttl):
            backend.close()
            raise WorkerConflict(
                f"a live worker with id {self.id!r} already serves job {self.jobname!r} on "
                f"{self.address.describe()}; give this one another id (REDISPARAM_ID or --id)"
            )
        logger.info("worker %s: serving job %s on %s", self.id, self.jobname, self.address.describe())
        restore = self._install_signal_handlers()
        beat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.id}", daemon=True)
        beat.start()
        try:
            self._serve(backend)
        except StopRequested:
            logger.info("worker %s: stopping", self.id)
        finally:
            self._stop.set()
            restore()
            beat.join()  # before deregistering, so that the heartbeat cannot register the worker again
            try:
                returned = backend.deregister_worker(self.jobname, self.id)
            except Exception as e:  # the server may be gone already; its lease then simply expires
                logger.warning("worker %s: could not deregister: %s", self.id, e)
            else:
                if returned:
                    logger.info("worker %s: put %d unfinished message(s) back on the queue", self.id, returned)
            backend.close()
            logger.info("worker %s: stopped after %d task(s)", self.id, self.tasks_done)
        return self.tasks_done

    def _serve(self, backend: Backend) -> None:
        delay, recover, warned = 0.05, False, -REFUSAL_WARNING
        claimed: bytes | None = None  # claimed with the last completion
        while not self._stop.is_set():
            self._busy = False
            try:
                # after a lost connection, a claim may have moved a message that never reached us
                held = backend.held_messages(self.jobname, self.id) if recover or self._recover else []
                recover = self._recover = False
                message = held[0] if held else claimed or backend.claim(self.jobname, self.id, timeout=1.0)
                claimed = None
                if message is None:
                    if self.burst:
                        return
                    continue
                self._busy = True
                _test_hook("claimed")
                claimed = self._process(backend, message)
                delay = 0.05
            except TRANSIENT_ERRORS as e:
                logger.warning("worker %s: lost Redis at %s (%s); retrying", self.id, self.address.describe(), e)
                time.sleep(delay)
                delay, recover = min(2 * delay, 2.0), True
                continue
            except REFUSING_WRITES as e:  # nothing can be claimed or stored; runs that end may free the server
                if time.monotonic() - warned >= REFUSAL_WARNING:
                    logger.warning("worker %s: %s; waiting", self.id, e)
                    warned = time.monotonic()
                time.sleep(delay)
                delay, recover = min(2 * delay, 2.0), True
                continue
            self.messages_done += 1
            if self.max_tasks is not None and self.messages_done >= self.max_tasks:
                return

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            self._stop.set()
            if not self._busy:
                raise StopRequested("idle")
            if self._signals >= 2:
                logger.warning("worker %s: cold stop; the current task goes back to the queue", self.id)
                raise StopRequested("cold")
            logger.info("worker %s: warm stop after the current task (signal again to stop now)", self.id)

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _heartbeat_loop(self) -> None:
        backend = self._backend
        assert backend is not None
        while not self._stop.wait(self.heartbeat_interval):
            try:
                fields = {"current": self._current, "heartbeat": f"{time.time():.3f}"}
                alive, stop = backend.heartbeat(self.jobname, self.id, self.heartbeat_ttl, fields)
                if stop and not self._stop.is_set():
                    logger.info("worker %s: stop requested through Redis", self.id)
                    self._stop.set()
                if not alive and not self._stop.is_set():
                    logger.warning("worker %s: lease had expired; registering again", self.id)
                    backend.register_worker(self.jobname, self.id, self.info(), self.heartbeat_ttl)
            except Exception as e:  # keep beating through a passing network fault
                logger.warning("worker %s: heartbeat failed: %s", self.id, e)

    # ---------------------------------------------------------------- one message
    def _process(self, backend: Backend, message: bytes) -> bytes | None:
        """Run one message; return the next one if it was claimed with the completion. The manager's exported
        globals, once applied (``self._globals``), hold until the message is done."""
        try:
            with contextlib.ExitStack() as self._globals:
                return self._process_message(backend, message)
        finally:
            self._current = ""

    def _process_message(self, backend: Backend, message: bytes) -> bytes | None:
        try:
            run_id, msg_id, attempt, _ = decode_header(message)
            payload = open_task(message, self.signer, self.jobname)
        except (ValueError, PayloadRejected) as e:
            self._reject(backend, message, e)
            return None
        self._current, self._rejected = f"{run_id}/{msg_id}", 0
        try:
            exported, body = split_payload(payload)  # the manager's globals apply from before the batch is unpickled
            self._globals.enter_context(apply_globals(loads(exported) if exported else None))
            batch: Batch = loads(body)
        except BaseException as e:  # noqa: B036 - anything that breaks decoding is reported, never fatal
            if isinstance(e, StopRequested):
                raise
            error = dumps_exception(e, e.__traceback__)
            record = dumps_completion(
                Completion(msg_id, attempt, self.id, [], error), self.signer, self.jobname, run_id
            )
            backend.complete(Report(self.jobname, self.id, run_id, message, record))
            return None
        produced = {entry.idx for entry in batch.entries}
        needed = {i for entry in batch.entries for _, i in entry.deps} - produced - set(batch.inline)
        cached = self._cache.take(run_id, needed)
        external = sorted(needed - set(cached))
        alive, raw = backend.load_inputs(self.jobname, run_id, [str(i) for i in external])
        if not alive:
            logger.info("worker %s: run %s is gone; skipping message %d", self.id, run_id, msg_id)
            backend.release_message(self.jobname, self.id, message)
            return None
        if batch.rng_seed is None:
            reseed_from_entropy()
        values: dict[int, Any] = dict(batch.inline)
        values.update(cached)
        read_parts = functools.partial(backend.read_parts, self.jobname, run_id)
        failed = triage(external, open_values(raw, self.signer, self.jobname, read_parts), values)
        for i, refusal in failed.items():
            if refusal is not None:
                logger.warning("worker %s: input %d of run %s rejected, not unpickled: %s", self.id, i, run_id, refusal)
        missing = set(failed)
        outcomes, results = run_batch(batch, values, missing, self._watchdog)
        made = {int(field): values[int(field)] for field, _ in results}
        values.clear()  # free the inputs before the results are written
        stores: list[tuple[str, bytes]] = []
        large: list[tuple[str, bytes]] = []
        parts: list[Part] = []
        part_names: dict[int, tuple[str, ...]] = {}
        for field, pickled in results:  # later tasks on this worker that need these values find them here
            nbytes = pickled.nbytes if isinstance(pickled, Frames) else len(pickled)
            self._cache.put(run_id, int(field), made.pop(int(field)), nbytes)
            sealed, value_parts = pack(pickled, self.signer, self.jobname)
            if value_parts:
                large.append((field, sealed))
                parts += value_parts
                part_names[int(field)] = tuple(name for name, _ in value_parts)
            else:
                stores.append((field, sealed))
        if part_names:
            outcomes = [o._replace(parts=part_names.get(o.idx, ())) for o in outcomes]
        record = dumps_completion(
            Completion(msg_id, attempt, self.id, outcomes, None), self.signer, self.jobname, run_id
        )
        _test_hook("executed")
        try:
            report = Report(self.jobname, self.id, run_id, message, record, stores, len(outcomes), large, parts)
            status, claimed = self._complete(backend, report)
        except ServerOutOfMemory as e:
            self._recover = True  # the refused completion may have claimed the next message
            self._report_unstored(backend, run_id, msg_id, attempt, message, e)
            return None
        if status < 0:
            logger.warning(
                "worker %s: lost the claim on message %d of run %s (lease expired); its result is dropped",
                self.id,
                msg_id,
                run_id,
            )
        _test_hook("completed")
        self.tasks_done += len(outcomes)
        return claimed

    def _report_unstored(
        self, backend: Backend, run_id: str, msg_id: int, attempt: int, message: bytes, error: ServerOutOfMemory
    ) -> None:
        """Redis is too full to store a message's results: report the message as failed (the manager fails the
        run); the small record fits, as a completion script is not refused once it has released the message."""
        logger.warning(
            "worker %s: could not store the results of message %d of run %s: %s", self.id, msg_id, run_id, error
        )
        failure = ServerOutOfMemory(f"{error} (worker {self.id} could not store the results of message {msg_id})")
        completion = Completion(msg_id, attempt, self.id, [], dumps_exception(failure, None))
        record = dumps_completion(completion, self.signer, self.jobname, run_id)
        backend.complete(Report(self.jobname, self.id, run_id, message, record))

    def _reject(self, backend: Backend, message: bytes, error: Exception) -> None:
        """Refuse a message that is not a task message of this version or fails its signature check.

        It is never unpickled: it goes to the job's dead-letter list, the rejection is recorded for ``status``, and
        the manager of its run (if the run is alive) gets a rejection notice, so that it sends the message again
        for another worker, or fails the run if every worker refuses. The worker keeps serving; after several
        refusals in a row it waits a little before each claim (up to a second), so that a worker that cannot read
        the job's messages (no secret, another secret) does not take all of them from the others.
        """
        reason, run_id, msg_id, attempt = classify_rejection(message, error)
        hint = ""
        if reason == "no-secret":
            hint = "; this worker has no secret: set REDISPARAM_SECRET (or REDISPARAM_SECRET_FILE) as for the manager"
        elif reason == "version":
            hint = "; run the same version of dask-redisparam on the manager and the workers"
        logger.warning(
            "worker %s: rejected a task message (not unpickled; dead-lettered): %s: %s%s",
            self.id,
            REJECTION_REASONS.get(reason, reason),
            error,
            hint,
        )
        info = {"reason": reason, "detail": str(error)[:200], "worker": self.id, "run": run_id or ""}
        info["time"] = f"{time.time():.3f}"
        notice = encode_rejected(msg_id, attempt, uuid.uuid4().hex[:12], reason, self.id)
        backend.reject_message(self.jobname, self.id, message, info, run_id, notice)
        self._rejected += 1
        if self._rejected > 1:
            self._stop.wait(min(0.1 * 2 ** (self._rejected - 2), 1.0))

    def _complete(self, backend: Backend, report: Report) -> tuple[int, bytes | None]:
        """Store and report, repeating through a lost connection (a repeat after success stores nothing); claim the
        next message in the same round trip unless this worker is stopping or at its last message.

        Returns what :meth:`Backend.complete` does and the message claimed, if any. Gives up (ServerUnavailable)
        after :data:`REPORT_GRACE` seconds, or 5 s once a stop was asked for: the message stays claimed in Redis,
        and is requeued when this worker's lease runs out.
        """
        delay, started = 0.05, time.monotonic()
        last = self.max_tasks is not None and self.messages_done + 1 >= self.max_tasks
        claim_next = not (last or self._stop.is_set())
        while True:
            try:
                return backend.complete_and_claim(report, claim_next=claim_next)
            except _REPORT_RETRIED as e:
                # a message claimed by a call whose reply was lost sits in our processing list: picked up later
                self._recover, claim_next = self._recover or claim_next, False
                waited = time.monotonic() - started
                if waited > REPORT_GRACE or (self._stop.is_set() and waited > 5.0):
                    raise ServerUnavailable(
                        f"worker {self.id}: cannot report to Redis at {self.address.describe()} for {waited:.0f} s: {e}"
                    ) from e
                logger.warning("worker %s: cannot report (%s); retrying", self.id, e)
                time.sleep(delay)
                delay = min(2 * delay, 2.0)


TEST_HOOK_ENV = "REDISPARAM_TEST_KILL_AT"
"""For fault tests only: ``<point>:<marker file>`` makes the worker SIGKILL itself once at ``point`` (claimed,
executed, completed) if the marker file does not exist yet (it is created first)."""


def _test_hook(point: str) -> None:
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec or not spec.startswith(point + ":"):
        return
    marker = spec.split(":", 1)[1]
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)

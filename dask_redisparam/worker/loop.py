"""The worker: claim a task message, fetch its inputs, run it, store the results, report; repeat.

One :class:`Worker` is one process serving one jobname. Its life::

    register (fails if a live worker has the same id)
      └─ loop: claim ──► load inputs ──► run entries ──► complete (store + report + release, atomically)
    deregister (messages still held go back to the queue)

Claiming moves the message into the worker's own processing list (``BLMOVE``), so a claimed task always sits in a
Redis key: never only in a worker's memory (a worker with resources also claims from the queues of the resource
classes they cover: :mod:`dask_redisparam.worker.claims`). A heartbeat thread renews the worker's lease every
``heartbeat_interval`` seconds and updates its record (:meth:`Worker.info`): ``current`` (``run/message`` being
processed), ``prefix`` (:func:`dask.utils.key_split` of the task key running now), ``rss`` (resident bytes) and
``beat`` (the heartbeat's unix time); ``tasks`` (tasks done) is counted by the completion script. Nothing is written
per message for them: a reader sees them as of the last heartbeat.

Signals: the first SIGTERM or SIGINT asks for a *warm* stop: an idle worker stops at once, a busy one finishes
its current message first. A second signal stops it *cold*: the current message goes back to the queue
(:mod:`dask_redisparam.worker.signals`). Reporting a message, its results or its refusal, is in
:mod:`dask_redisparam.worker.report`.

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

import collections
import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from dask.utils import key_split

from ..backend import TRANSIENT_ERRORS, Backend
from ..backend.stats import TaskStats, task_prefix
from ..config.address import RedisAddress
from ..config.schema import setting
from ..errors import (
    PayloadRejected,
    PersistenceFailed,
    ServerOutOfMemory,
    ServerReadOnly,
    StopRequested,
    WorkerConflict,
)
from ..rng import reseed_from_entropy
from ..sentinels import FROM_ENVIRONMENT
from ..wire.bulk import Frames, Part, Report, open_values, pack, triage
from ..wire.protocol import (
    OK,
    UNEVALUATED,
    Batch,
    Completion,
    Outcome,
    decode_header,
    dumps_completion,
    open_task,
    seal_values,
    split_payload,
)
from ..wire.resources import Resources, class_name
from ..wire.serialize import dumps_exception, loads
from ..wire.signing import Signer, signer_from_environment
from .cache import CACHE_BYTES, ValueCache
from .claims import ResourceClaims
from .execute import Running, Watchdog, apply_globals, run_batch
from .held import serving
from .memory import resident_bytes
from .prefetch import Claimed, Pending, Pipelining, PrefetchPolicy
from .report import reject
from .signals import fault_test_hook, install_stop_handlers

__all__ = ["Worker", "new_worker_id"]

logger = logging.getLogger(__name__)


REFUSING_WRITES = (ServerOutOfMemory, PersistenceFailed, ServerReadOnly)
"""A server that refuses writes for now (memory full, a failed RDB snapshot, a failover that made it a replica):
the worker waits for it, as for a lost connection, with a warning every :data:`REFUSAL_WARNING` seconds."""
REFUSAL_WARNING = 10.0


def task_stats(batch: Batch, outcomes: list[Outcome]) -> TaskStats:
    """The statistics of a message's tasks that ran, per key prefix (for the job's metrics and task stream)."""
    stats, entries = TaskStats(), {entry.idx: entry.key for entry in batch.entries}
    prefixes: dict[Any, str] = {}  # a tuple key's prefix is its name's: split once per name
    groups: dict[str, tuple[list[bool], list[float], list[float]]] = {}
    for idx, status, _, _, start, end, *_ in outcomes:
        if status != UNEVALUATED:
            key = entries[idx]
            name = key[0] if type(key) is tuple and key and type(key[0]) is str else key
            prefix = prefixes.get(name)
            if prefix is None:
                prefix = prefixes[name] = task_prefix(key)
            group = groups.get(prefix)
            if group is None:
                group = groups[prefix] = ([], [], [])
            group[0].append(status == OK)
            group[1].append(start)
            group[2].append(end)
    for prefix, (oks, starts, ends) in groups.items():
        stats.add_many(prefix, oks, starts, ends)
    return stats


def new_worker_id() -> str:
    """A fresh random worker id (10 hex digits, as RedisParam's ids)."""
    return uuid.uuid4().hex[:10]


class Worker(Pipelining):
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
    replicas, replicas_timeout, replicas_required : int, float, bool
        ``WAIT replicas`` (up to ``replicas_timeout`` s) after each completion (see ``report.check_replicated``).
    resources : tuple of (str, float)
        The resources of the worker's daemon, shared by its processes (the ``resources`` setting's form); with
        them the worker also claims messages of the resource classes they cover
        (:mod:`dask_redisparam.backend.resources`).
    daemon : str, optional
        The id of the daemon whose resources the worker shares (default: its own id).
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
        replicas: int = setting("replicas").default,
        replicas_timeout: float = setting("replicas_timeout").default,
        replicas_required: bool = setting("replicas_required").default,
        resources: Resources = (),
        daemon: str | None = None,
    ) -> None:
        self.address = address
        self.jobname = jobname
        self.id = worker_id or os.environ.get("REDISPARAM_ID") or new_worker_id()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.burst = burst
        self.max_tasks = max_tasks
        self.connect_timeout = connect_timeout
        self.replicas, self.replicas_timeout, self.replicas_required = replicas, replicas_timeout, replicas_required
        self.resources = tuple(resources)
        self.daemon = daemon or self.id
        self._claims = ResourceClaims(jobname, self.id, self.daemon, self.resources)  # where the next one comes from
        self.tasks_done = 0
        self.messages_done = 0
        self._backend: Backend | None = None
        self._stop = threading.Event()
        self._busy = False
        self._current = ""
        self._running = Running()  # the key of the task running now (set by run_batch)
        self._recover = False  # a lost reply may have left a claimed message in our processing list
        self._watchdog = Watchdog()
        self._cache = ValueCache(CACHE_BYTES)
        self._rejected = 0  # messages refused in a row (they slow this worker down: _slow_down_after_refusal)
        self._globals = contextlib.ExitStack()  # the exported globals of the message being processed
        self._held: collections.deque[Claimed] = collections.deque()  # claimed, not started, oldest first
        self._pending: Pending | None = None  # a completion on its way (prefetching)
        self._policy = PrefetchPolicy()
        self.signer: Signer | None = signer_from_environment() if signer is FROM_ENVIRONMENT else signer  # type: ignore[assignment]

    # ---------------------------------------------------------------- lifecycle
    def info(self) -> dict[str, str]:
        """The fields of the worker's registration: ``host``, ``pid``, ``started``, ``tasks``, and those that each
        heartbeat updates (:meth:`beat_fields`)."""
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started": f"{time.time():.3f}",
            "tasks": str(self.tasks_done),
            "resources": class_name(self.resources),
            "daemon": self.daemon,
            **self.beat_fields(),
        }

    def beat_fields(self) -> dict[str, str]:
        """The fields each heartbeat writes: ``current`` (``run/message``, "" when idle), ``prefix`` (the task key
        prefix of the task running now, "" when idle), ``rss`` (resident bytes), ``beat`` (unix time).

        Examples
        --------
        >>> from dask_redisparam.config.address import RedisAddress
        >>> w = Worker(RedisAddress.from_url("redis://localhost"), "doc-job")
        >>> w._running.key = ("inc-3f2a", 7)
        >>> w.beat_fields()["prefix"]
        'inc'
        """
        key = self._running.key
        return {
            "current": self._current,
            "prefix": "" if key is None else key_split(key),
            "rss": str(resident_bytes()),
            "beat": f"{time.time():.3f}",
        }

    def request_stop(self) -> None:
        """Ask for a warm stop (the current message is finished first)."""
        self._stop.set()

    def run(self) -> int:
        """Serve until stopped; return the number of tasks run."""
        backend = self._backend = Backend.connect(self.address, wait=self.connect_timeout)
        backend.check_job_access(self.jobname, wait=self.replicas > 0)
        if self.replicas > 0:
            backend.wait_replicas = (self.replicas, self.replicas_timeout)
        if not backend.register_worker(self.jobname, self.id, self.info(), self.heartbeat_ttl):
            backend.close()
            raise WorkerConflict(
                f"a live worker with id {self.id!r} already serves job {self.jobname!r} on "
                f"{self.address.describe()}; give this one another id (REDISPARAM_ID or --id)"
            )
        logger.info("worker %s: serving job %s on %s", self.id, self.jobname, self.address.describe())
        serving(self.jobname, backend, self.signer, self._cache)  # tasks reading persisted values use these
        restore = install_stop_handlers(self.id, self._stop, busy=lambda: self._busy)
        beat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.id}", daemon=True)
        beat.start()
        try:
            self._serve(backend)
        except StopRequested:
            logger.info("worker %s: stopping", self.id)
        finally:
            self._stop.set()
            serving(None)
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
        try:
            self._serve_messages(backend)
        finally:
            self._finish_pending(backend)  # before deregistering: its message must not go back to the queue

    def _serve_messages(self, backend: Backend) -> None:
        delay, recover, warned = 0.05, False, -REFUSAL_WARNING
        while not self._stop.is_set():
            self._busy = False
            try:
                if recover or self._recover:
                    # after a lost connection, a claim may have moved a message that never reached us
                    self._finish_pending(backend)
                    self._held = collections.deque(Claimed(m) for m in backend.held_messages(self.jobname, self.id))
                    if self._held and self.resources:
                        self._claims.holding = True
                    recover = self._recover = False
                if not self._held:
                    self._finish_pending(backend)
                if not self._held:
                    message = self._claims.claim(backend)  # (worker/claims.py: resource classes first)
                    if message is None:
                        if self.burst:
                            return
                        continue
                    self._held.append(Claimed(message))
                self._busy = True
                fault_test_hook("claimed")
                claimed = self._held.popleft()
                if self._held:
                    fault_test_hook("prefetched")  # this message is started with the next one claimed
                self._process(backend, claimed)
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

    def _heartbeat_loop(self) -> None:
        backend = self._backend
        assert backend is not None
        while not self._stop.wait(self.heartbeat_interval):
            try:
                alive, stop = backend.heartbeat(self.jobname, self.id, self.heartbeat_ttl, self.beat_fields())
                if stop and not self._stop.is_set():
                    logger.info("worker %s: stop requested through Redis", self.id)
                    self._stop.set()
                if not alive and not self._stop.is_set():
                    logger.warning("worker %s: lease had expired; registering again", self.id)
                    backend.register_worker(self.jobname, self.id, self.info(), self.heartbeat_ttl)
            except Exception as e:  # keep beating through a passing network fault
                logger.warning("worker %s: heartbeat failed: %s", self.id, e)

    # ---------------------------------------------------------------- one message
    def _process(self, backend: Backend, claimed: Claimed) -> None:
        """Run one message and send its completion (which claims the next ones). The manager's exported globals,
        once applied (``self._globals``), hold until the message is done."""
        try:
            with contextlib.ExitStack() as self._globals:
                self._process_message(backend, claimed)
        finally:
            self._current = ""
            if self._claims.holding:
                with contextlib.suppress(*TRANSIENT_ERRORS):  # else freed before the next claim
                    self._claims.release(backend)

    def _process_message(self, backend: Backend, claimed: Claimed) -> None:
        message = claimed.message
        try:
            run_id, msg_id, attempt, _ = decode_header(message)
            payload = open_task(message, self.signer, self.jobname)
        except (ValueError, PayloadRejected) as e:
            reject(backend, self.jobname, self.id, message, e)
            self._slow_down_after_refusal()
            return
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
            return
        produced = {entry.idx for entry in batch.entries}
        needed = {i for entry in batch.entries for _, i in entry.deps} - produced - set(batch.inline)
        cached = self._cache.take(run_id, needed)
        external = sorted(needed - set(cached))
        if external or not claimed.confirmed(run_id):  # else the completion that claimed it found the run alive
            started = time.perf_counter()
            alive, raw = backend.load_inputs(self.jobname, run_id, [str(i) for i in external])
            self._policy.round_trip(time.perf_counter() - started)
        else:
            alive, raw = True, []
        if not alive:
            logger.info("worker %s: run %s is gone; skipping message %d", self.id, run_id, msg_id)
            backend.release_message(self.jobname, self.id, message)
            return
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
        started = time.perf_counter()
        outcomes, results = run_batch(batch, values, missing, self._watchdog, self._running)
        self._policy.ran(time.perf_counter() - started)
        made = {int(field): values[int(field)] for field, _ in results}
        values.clear()  # free the inputs before the results are written
        stores: list[tuple[str, bytes]] = []
        large: list[tuple[str, bytes]] = []
        parts: list[Part] = []
        part_names: dict[int, tuple[str, ...]] = {}
        small_fields: list[str] = []
        small: list[bytes] = []
        for field, pickled in results:  # later tasks on this worker that need these values find them here
            nbytes = pickled.nbytes if isinstance(pickled, Frames) else len(pickled)
            self._cache.put(run_id, int(field), made.pop(int(field)), nbytes)
            if not isinstance(pickled, Frames):  # sealed below, all in one go
                small_fields.append(field)
                small.append(pickled)
                continue
            sealed, value_parts = pack(pickled, self.signer, self.jobname, field)
            if value_parts:
                large.append((field, sealed))
                parts += value_parts
                part_names[int(field)] = tuple(name for name, _ in value_parts)
            else:
                stores.append((field, sealed))
        stores += zip(small_fields, seal_values(small, self.signer, self.jobname), strict=True)
        if part_names:
            outcomes = [o._replace(parts=part_names.get(o.idx, ())) for o in outcomes]
        record = dumps_completion(
            Completion(msg_id, attempt, self.id, outcomes, None), self.signer, self.jobname, run_id
        )
        fault_test_hook("executed")
        stats = task_stats(batch, outcomes).arguments()
        report = Report(self.jobname, self.id, run_id, message, record, stores, len(outcomes), large, parts, stats)
        self._send(backend, report, msg_id, attempt, len(outcomes), batch.entries[0].idx)

    def _slow_down_after_refusal(self) -> None:
        """After several refused messages in a row, wait a little before each claim (up to a second), so that a
        worker that cannot read the job's messages (no secret, another secret) does not take all of them from the
        others."""
        self._rejected += 1
        if self._rejected > 1:
            self._stop.wait(min(0.1 * 2 ** (self._rejected - 2), 1.0))

"""The manager: run one dask graph through Redis.

:func:`run_graph` drives one *run* (one call of a ``get``) with a single state machine, shaped like
``dask.local``'s so that ``dask.diagnostics`` callbacks read it unchanged. The state dict holds:

``dependencies`` / ``dependents``
    key -> set of keys, both directions (of the culled graph).
``waiting``
    key -> set of its dependencies that have not finished.
``waiting_data``
    key -> set of its dependents that have not finished; when it empties, the key's stored value is deleted
    from Redis unless the key was requested.
``ready``
    a heap of ``(priority, n, key)``: tasks whose inputs all exist, in ``dask.order`` order.
``running``
    keys sent to Redis (queued or executing) and not yet finished.
``finished`` / ``released``
    keys done; keys whose value was dropped.
``cache``
    key -> :class:`StoredResult` for finished keys still held. Values stay in Redis: the manager only ever
    downloads the requested keys, at the end.

A task's life on the manager::

    waiting ──► ready ──► running (in a message: queued, then claimed by a worker) ──► finished ──► released

Ready tasks leave in **messages** (batches): at most ``ceil(live workers × queue_multiplier)`` messages are
queued or running at once, the rest waits in ``ready``. A message takes a chunk of ready tasks, sized so that it
runs about ``TARGET_SECONDS`` (measured), and each task's linear chain of dependents (a dependent whose only
input it is), which then never leaves the worker. Small literals travel inside messages; large ones are uploaded
once at the start.

Every round trip of the loop is one pipeline: push new messages, delete released values, renew the run's lease
and take completion records; it blocks (up to a second) only when nothing came back.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from dask._task_spec import Alias, DataNode
from dask.callbacks import local_callbacks, unpack_callbacks
from dask.sizeof import sizeof

from .backend import Backend
from .errors import KilledWorker, RunLost, SerializationError, make_remote
from .graph import Graph
from .protocol import (
    ERROR,
    LOST,
    OK,
    Batch,
    Entry,
    decode_header,
    decode_lost,
    encode_task,
    loads_completion,
)
from .serialize import dumps_task, dumps_value, loads, loads_exception

__all__ = ["RunOptions", "StoredResult", "run_graph"]

logger = logging.getLogger(__name__)

TARGET_SECONDS = 0.05
"""How long one message should keep a worker busy, in seconds (chunking of small tasks)."""
INLINE_BYTES = 16 * 1024
"""Literals estimated smaller than this travel inside messages; larger ones are uploaded once."""
RUN_TTL = 30.0
"""Seconds a run's keys outlive its manager's last sign of life."""
WAIT_WARNING = 10.0
"""Seconds between warnings while no worker serves the job."""


class StoredResult:
    """What the manager knows of a finished task's value: where it is, its size, who made it.

    Passed as ``result`` to ``posttask`` callbacks, since values stay in Redis.
    """

    __slots__ = ("key", "nbytes", "worker")

    def __init__(self, key: Hashable, nbytes: int, worker: str) -> None:
        self.key, self.nbytes, self.worker = key, nbytes, worker

    def __sizeof__(self) -> int:
        return self.nbytes

    def __repr__(self) -> str:
        return f"StoredResult({self.key!r}, nbytes={self.nbytes}, worker={self.worker!r})"


class RunOptions:
    """Settings of one run.

    Parameters
    ----------
    jobname : str
        The job whose queue and workers serve the run.
    queue_multiplier : float
        Messages in flight per live worker.
    stop_on_error : bool
        Stop at the first failing task.
    fuse_chains : bool
        Send a task's linear chain of dependents in the same message.
    allowed_failures : int
        How many workers may die running a message before its tasks fail with ``KilledWorker``.
    describe_server : str
        ``host:port`` for messages.
    """

    def __init__(
        self,
        jobname: str,
        *,
        queue_multiplier: float = 2.0,
        stop_on_error: bool = True,
        fuse_chains: bool = True,
        allowed_failures: int = 3,
        describe_server: str = "",
    ) -> None:
        self.jobname = jobname
        self.queue_multiplier = queue_multiplier
        self.stop_on_error = stop_on_error
        self.fuse_chains = fuse_chains
        self.allowed_failures = allowed_failures
        self.describe_server = describe_server


class _Run:
    """The state of one run; see the module docstring."""

    def __init__(self, backend: Backend, graph: Graph, options: RunOptions, callbacks: Sequence[Any]) -> None:
        self.backend, self.graph, self.options = backend, graph, options
        self.job = options.jobname
        self.run_id = uuid.uuid4().hex[:12]
        self.requested = set(graph.requested)
        self.idx = {key: n for n, key in enumerate(graph.nodes)}
        self.keys_by_idx = list(graph.nodes)
        self.loc: dict[Hashable, int] = {}  # key -> data field (or inline literal) that holds its value
        self.holders: dict[int, int] = {}  # field -> number of keys whose value it holds
        self.inline: dict[int, Any] = {}  # small literals, by field
        self.messages: dict[int, tuple[bytes, list[Hashable]]] = {}  # in flight: message id -> (bytes, keys)
        self.next_msg = 0
        self.counter = 0
        self.to_release: list[str] = []
        self.mean_seconds: float | None = None
        self.window = 0
        self.error: BaseException | None = None
        self.state: dict[str, Any] = {
            "dependencies": graph.dependencies,
            "dependents": graph.dependents,
            "waiting": {},
            "waiting_data": {k: set(v) for k, v in graph.dependents.items()},
            "cache": {},
            "ready": [],
            "running": set(),
            "finished": set(),
            "released": set(),
        }
        unpacked = unpack_callbacks(callbacks)  # type: ignore[no-untyped-call]
        self.start_cbs, self.start_state_cbs, self.pretask_cbs, self.posttask_cbs, self.finish_cbs = unpacked

    # ------------------------------------------------------------------ set-up
    def start(self) -> dict[str, bytes]:
        """Fill the initial state; return the large literals to upload (field -> pickled value)."""
        waiting = self.state["waiting"]
        uploads: dict[str, bytes] = {}
        literals = []
        for key, node in self.graph.nodes.items():
            if isinstance(node, DataNode):
                literals.append(key)
            elif self.graph.dependencies[key]:
                waiting[key] = set(self.graph.dependencies[key])
        for key in literals:
            value = self.graph.nodes[key]({})
            field = self.idx[key]
            if sizeof(value) > INLINE_BYTES:
                uploads[str(field)] = dumps_value(value)
            else:
                self.inline[field] = value
            self.loc[key] = field
            self.holders[field] = 1
        for key, node in self.graph.nodes.items():
            if not isinstance(node, DataNode) and key not in waiting:
                self.make_ready(key)
        for key in literals:
            for dependent in self.mark_finished(key, StoredResult(key, 0, "manager"), notify=False):
                self.make_ready(dependent)
        return uploads

    # ------------------------------------------------------------------ transitions
    def make_ready(self, key: Hashable) -> None:
        """A task's inputs all exist: queue it on the manager (aliases finish here and now)."""
        stack = [key]
        while stack:
            key = stack.pop()
            node = self.graph.nodes[key]
            if isinstance(node, Alias):
                (target,) = self.graph.dependencies[key] or {key}
                field = self.loc.get(target)
                if field is not None:
                    self.loc[key] = field
                    self.holders[field] += 1
                for cb in self.pretask_cbs:
                    cb(key, self.graph.nodes, self.state)
                stack.extend(self.mark_finished(key, StoredResult(key, 0, "manager")))
                continue
            self.counter += 1
            heapq.heappush(self.state["ready"], (self.graph.priority.get(key, 0), self.counter, key))

    def mark_finished(self, key: Hashable, result: StoredResult, notify: bool = True) -> list[Hashable]:
        """Record a finished key, release inputs nobody needs any more; return dependents that became ready.

        ``notify`` calls the ``posttask`` callbacks (not for literals, which never had a ``pretask``).
        """
        state = self.state
        state["running"].discard(key)
        state["finished"].add(key)
        state["cache"][key] = result
        if notify:
            for cb in self.posttask_cbs:
                cb(key, result, self.graph.nodes, state, result.worker)
        for dep in self.graph.dependencies[key]:
            holders = state["waiting_data"][dep]
            holders.discard(key)
            if not holders and dep not in self.requested:
                self.release(dep)
        if not state["waiting_data"][key] and key not in self.requested:
            self.release(key)
        became_ready = []
        for dependent in self.graph.dependents[key]:
            waiting = state["waiting"].get(dependent)
            if waiting is not None:
                waiting.discard(key)
                if not waiting:
                    del state["waiting"][dependent]
                    became_ready.append(dependent)
        return became_ready

    def release(self, key: Hashable) -> None:
        """Forget a value nobody needs; delete it from Redis when no other key shares its field."""
        self.state["released"].add(key)
        self.state["cache"].pop(key, None)
        field = self.loc.pop(key, None)
        if field is None:
            return
        self.holders[field] -= 1
        if self.holders[field] == 0:
            del self.holders[field]
            if self.inline.pop(field, _MISSING) is _MISSING:
                self.to_release.append(str(field))

    # ------------------------------------------------------------------ dispatch
    def chunk_size(self, free_slots: int) -> int:
        ready = len(self.state["ready"])
        even = math.ceil(ready / max(1, free_slots))
        if self.mean_seconds is None:
            return 1
        cap = max(1, int(TARGET_SECONDS / max(self.mean_seconds, 1e-6)))
        return max(1, min(even, cap))

    def chain_of(self, key: Hashable) -> list[Hashable]:
        """``key`` and the dependents that only it feeds, one after the other."""
        chain = [key]
        if not self.options.fuse_chains:
            return chain
        nodes, dependents, dependencies = self.graph.nodes, self.graph.dependents, self.graph.dependencies
        waiting = self.state["waiting"]
        while True:
            (nxt,) = dependents[chain[-1]] if len(dependents[chain[-1]]) == 1 else (None,)
            if nxt is None or isinstance(nodes[nxt], Alias) or dependencies[nxt] != {chain[-1]}:
                return chain
            del waiting[nxt]
            chain.append(nxt)

    def build_message(self, n_tasks: int) -> bytes:
        """Take up to ``n_tasks`` ready tasks (plus their chains) into one message."""
        ready, running = self.state["ready"], self.state["running"]
        entries: list[Entry] = []
        inline: dict[int, Any] = {}
        keys: list[Hashable] = []
        while ready and len(entries) < n_tasks:
            _, _, head = heapq.heappop(ready)
            chain = self.chain_of(head)
            for pos, key in enumerate(chain):
                deps = []
                for dep in self.graph.dependencies[key]:
                    field = self.idx[dep] if pos and dep == chain[pos - 1] else self.loc[dep]
                    deps.append((dep, field))
                    if field in self.inline:
                        inline[field] = self.inline[field]
                last = pos == len(chain) - 1
                store = key in self.requested or last
                entries.append(Entry(self.idx[key], key, self.graph.nodes[key], tuple(deps), store))
                keys.append(key)
                running.add(key)
                for cb in self.pretask_cbs:
                    cb(key, self.graph.nodes, self.state)
        msg_id = self.next_msg
        self.next_msg += 1
        batch = Batch(self.options.stop_on_error, inline, entries)
        try:
            payload = dumps_task(batch)
        except Exception as e:
            raise self.unpicklable(batch, e) from e
        message = encode_task(self.run_id, msg_id, 0, payload)
        self.messages[msg_id] = (message, keys)
        return message

    def unpicklable(self, batch: Batch, error: Exception) -> SerializationError:
        for entry in batch.entries:
            try:
                dumps_task(entry.node)
            except Exception as e:
                return SerializationError(f"cannot pickle task {entry.key!r} (its function or arguments): {e}")
        return SerializationError(f"cannot pickle the inputs of a message of run {self.run_id}: {error}")

    def fill(self) -> list[bytes]:
        """New messages, up to the window."""
        out = []
        stopping = self.error is not None and self.options.stop_on_error
        while self.state["ready"] and len(self.messages) < self.window and not stopping:
            free = self.window - len(self.messages)
            out.append(self.build_message(self.chunk_size(free)))
        return out

    # ------------------------------------------------------------------ completion
    def handle(self, record: bytes) -> None:
        """Apply one completion record, or a notice that a message was requeued after its worker died."""
        if record.startswith(LOST):
            self.handle_lost(*decode_lost(record))
            return
        done = loads_completion(record)
        sent = self.messages.pop(done.msg_id, None)
        if sent is None:  # a duplicate, or from a message already given up
            return
        if done.batch_error is not None:
            self.fail(sent[1][0], done.batch_error, done.worker)
            return
        became_ready: list[Hashable] = []
        for outcome in done.outcomes:
            key = self.keys_by_idx[outcome.idx]
            if outcome.status == OK:
                seconds = outcome.end - outcome.start
                self.mean_seconds = seconds if self.mean_seconds is None else 0.8 * self.mean_seconds + 0.2 * seconds
                if outcome.nbytes or key in self.requested:
                    self.loc[key] = outcome.idx
                    self.holders[outcome.idx] = 1
                became_ready += self.mark_finished(key, StoredResult(key, outcome.nbytes, done.worker))
            elif outcome.status == ERROR:
                assert outcome.error is not None
                self.fail(key, outcome.error, done.worker)
        for key in became_ready:
            self.make_ready(key)

    def handle_lost(self, msg_id: int, attempt: int, worker: str) -> None:
        """A message went back to the queue with ``attempt`` after its worker died."""
        sent = self.messages.get(msg_id)
        if sent is None:
            return
        message, keys = sent
        run_id, _, _, offset = decode_header(message)
        self.messages[msg_id] = (encode_task(run_id, msg_id, attempt, message[offset:]), keys)
        logger.warning("manager: worker %s died running %d task(s) of run %s; retrying", worker, len(keys), run_id)
        if attempt > self.options.allowed_failures and self.error is None:
            self.error = KilledWorker(keys[0], attempt, worker, self.options.allowed_failures)

    def fail(self, key: Hashable, error_bytes: bytes, worker: str) -> None:
        """A task raised: keep the first error (the run stops in :func:`run_graph`)."""
        if self.error is not None:
            return
        exc, tb, text = loads_exception(error_bytes)
        self.error = make_remote(exc, key, worker, text).with_traceback(tb)

    def results(self) -> dict[Hashable, Any]:
        """Download the requested values."""
        out: dict[Hashable, Any] = {}
        remote = []
        for key in self.graph.requested:
            field = self.loc[key]
            if field in self.inline:
                out[key] = self.inline[field]
            else:
                remote.append(key)
        blobs = self.backend.fetch_values(self.job, self.run_id, [str(self.loc[k]) for k in remote])
        for key, blob in zip(remote, blobs, strict=True):
            if blob is None:
                raise RunLost(
                    f"the value of {key!r} is missing from Redis at {self.options.describe_server}: "
                    "was the server restarted without persistence, or the key evicted?"
                )
            out[key] = loads(blob)
        return out


_MISSING = object()


def run_graph(
    backend: Backend,
    graph: Graph,
    options: RunOptions,
    *,
    callbacks: Any = None,
    live_workers: Callable[[], int] | None = None,
) -> dict[Hashable, Any]:
    """Run ``graph`` through Redis and return ``{requested key: value}``.

    Parameters
    ----------
    backend : Backend
        The connection to the server.
    graph : Graph
        From :func:`dask_redisparam.graph.prepare_graph`.
    options : RunOptions
        Job name, window and error policy.
    callbacks : optional
        dask ``Callback`` objects or 5-tuples; default: the active ones (``with ProgressBar(): ...``).
    live_workers : callable, optional
        Returns the number of live workers; default asks Redis (at most once per second).

    Raises
    ------
    Exception
        The first exception a task raised, with its original type, also a ``RemoteError``.
    SerializationError
        A task cannot be pickled.
    """
    count_workers = live_workers or (lambda: _count_and_reap(backend, options.jobname))
    with local_callbacks(callbacks) as cbs:
        run = _Run(backend, graph, options, cbs)
        for cb in run.start_cbs:
            cb(graph.nodes)
        failed = True
        try:
            uploads = run.start()
            for cb in run.start_state_cbs:
                cb(graph.nodes, run.state)
            backend.open_run(run.job, run.run_id, RUN_TTL, uploads)
            _loop(run, count_workers)
            result = run.results()
            failed = False
            return result
        finally:
            _close(run)
            for cb in run.finish_cbs:
                cb(graph.nodes, run.state, failed)


def _count_and_reap(backend: Backend, jobname: str) -> int:
    """Count the live workers; requeue what dead ones held (any manager of the job may do it; it is atomic)."""
    live, dead = backend.worker_liveness(jobname)
    for worker_id in dead:
        moved = backend.reap_worker(jobname, worker_id)
        if moved:
            logger.warning(
                "manager: worker %s of job %s is gone; requeued %d message(s)", worker_id, jobname, len(moved)
            )
    return len(live)


def _loop(run: _Run, count_workers: Callable[[], int]) -> None:
    backend, job = run.backend, run.job
    last_count = last_renew = last_warning = time.monotonic()
    run.window = math.ceil(count_workers() * run.options.queue_multiplier)
    todo = len(run.graph.nodes)
    while len(run.state["finished"]) < todo:
        now = time.monotonic()
        if now - last_count >= 1.0:
            run.window = math.ceil(count_workers() * run.options.queue_multiplier)
            last_count = now
        renew = now - last_renew >= RUN_TTL / 6
        if renew:
            last_renew = now
        messages = run.fill()
        records = backend.exchange(job, run.run_id, messages, run.to_release, RUN_TTL if renew else None)
        run.to_release = []
        if not records and run.messages:
            records = backend.wait_records(job, run.run_id, 1.0)
        elif not records and not run.messages:
            if run.error is not None:
                raise run.error
            if not run.state["ready"]:
                raise RuntimeError(f"run {run.run_id} has tasks waiting on nothing: {list(run.state['waiting'])[:5]}")
            if run.window == 0:
                if now - last_warning >= WAIT_WARNING:
                    logger.warning(
                        "manager: no live worker serves job %r on %s; waiting for one",
                        job,
                        run.options.describe_server,
                    )
                    last_warning = now
                time.sleep(0.1)
                last_count = 0.0
        for record in records:
            run.handle(record)
        if run.error is not None and run.options.stop_on_error:
            raise run.error


def _close(run: _Run) -> None:
    """End the run: withdraw its queued messages and delete its keys."""
    try:
        if run.messages:
            withdrawn = run.backend.withdraw(run.job, [m for m, _ in run.messages.values()])
            if withdrawn:
                logger.debug("manager: withdrew %d queued message(s) of run %s", withdrawn, run.run_id)
        run.backend.close_run(run.job, run.run_id)
    except Exception as e:  # never hide the run's own outcome behind a clean-up failure
        logger.warning("manager: could not clean up run %s: %s", run.run_id, e)


def message_run_id(message: bytes) -> str:
    """The run id in a task message's header (for inspection tools)."""
    return decode_header(message)[0]

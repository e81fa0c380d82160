"""The manager's state machine for one run (one call of a ``get``).

:class:`RunState` holds the run's state, shaped like ``dask.local``'s so that ``dask.diagnostics`` callbacks read
it unchanged, and its transitions. It does no I/O (no Redis, no files): it takes *events* (completion records,
loss and rejection notices, worker counts, withdrawn messages, tasks fed to a stream) and hands out *commands*
(:class:`Commands`: messages to push or withdraw, values to delete, task logs to show, "tell me the live
workers"), which :mod:`dask_redisparam.manager` carries out against Redis. The state dict holds:

``dependencies`` / ``dependents``
    key -> set of keys, both directions (of the culled graph).
``waiting``
    key -> set of its dependencies that have not finished.
``waiting_data``
    key -> set of its dependents that have not finished; when it empties, the key's stored value is deleted
    from Redis unless the key was requested.
``ready``
    a heap of ``((-user priority, dask.order priority), n, key)``: tasks whose inputs all exist, highest
    ``dask.annotate(priority=...)`` first (as dask.distributed), then in ``dask.order`` order.
``running``
    keys sent to Redis (queued or executing) and not yet finished.
``finished`` / ``released``
    keys done; keys whose value was dropped.
``cache``
    key -> :class:`StoredResult` for finished keys still held. Values stay in Redis: the manager only ever
    downloads the requested keys, at the end.

A task's life on the manager::

    waiting ──► ready ──► running (in a message: queued, then claimed by a worker) ──► finished ──► released
                  ▲                          │
                  └──────────────────────────┘  it raised and has retries left, or it was not evaluated

Ready tasks leave in **messages** (batches): at most ``ceil(live workers × queue_multiplier)`` messages are
queued or running at once, the rest waits in ``ready``. A message takes a chunk of ready tasks, sized so that it
runs about ``TARGET_SECONDS`` (measured), and each task's linear chain of dependents (a dependent whose only
input it is), which then never leaves the worker. Small literals travel inside messages; large ones are uploaded
once at the start.

A message whose worker died comes back with its attempt number raised (a *lost* notice); after
``allowed_failures`` + 1 attempts its tasks fail with :class:`~dask_redisparam.errors.KilledWorker`. A task that
raised runs again while it has retries (``retries`` setting or ``dask.annotate(retries=n)``). With a ``timeout``
every message carries one task, so that stopping one task never costs another its result.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from dask._task_spec import Alias, DataNode
from dask.callbacks import unpack_callbacks
from dask.sizeof import sizeof

from ..errors import KilledWorker, PayloadRejected, SerializationError, TaskTimeout, Unevaluated, raise_partial
from ..sentinels import MISSING
from ..wire.bulk import Part, pack
from ..wire.protocol import (
    ERROR,
    LOST,
    OK,
    REJECTED,
    UNEVALUATED,
    Batch,
    Completion,
    Entry,
    Rejection,
    decode_rejected,
    encode_task,
    join_payload,
    loads_completion,
    open_lost,
)
from ..wire.serialize import dumps_result, dumps_task, loads_exception, make_remote
from .graph import EMPTY, Graph
from .options import Commands, RedoInfo, RunOptions, StoredResult, TimelineRecord
from .rejections import Rejections

__all__ = ["INLINE_BYTES", "TARGET_SECONDS", "RunState"]

logger = logging.getLogger(__name__)

TARGET_SECONDS = 0.1
"""How long one message should keep a worker busy, in seconds (chunking of small tasks)."""
INLINE_BYTES = 16 * 1024
"""Literals estimated smaller than this travel inside messages; larger ones are uploaded once."""


class RunState:
    """The state of one run and its transitions; see the module docstring.

    Parameters
    ----------
    graph : Graph
        From :func:`dask_redisparam.manager.graph.prepare_graph`.
    options : RunOptions
        The run's settings.
    callbacks : sequence
        dask callbacks (``Callback`` objects or 5-tuples), called on the transitions as ``dask.local`` does.
    clock : callable, optional
        Monotonic seconds, for the rejection policy (default :func:`time.monotonic`).
    run_id : str, optional
        Default: a fresh random one.

    Examples
    --------
    >>> from dask_redisparam.manager.graph import prepare_graph
    >>> from dask_redisparam.config.settings import Settings
    >>> options = RunOptions.from_settings(Settings(jobname="job", environ={}))
    >>> run = RunState(prepare_graph({"x": 1, "y": (abs, "x")}, ["y"]), options, [])
    >>> run.start({})
    ({}, [], {})
    >>> run.set_workers(1)
    >>> commands = run.take_commands()
    >>> len(commands.push), sorted(run.state["running"])
    (1, ['y'])
    """

    def __init__(
        self,
        graph: Graph,
        options: RunOptions,
        callbacks: Sequence[Any],
        *,
        clock: Callable[[], float] = time.monotonic,
        run_id: str | None = None,
    ) -> None:
        self.graph, self.options = graph, options
        self.job = options.jobname
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.requested = set(graph.requested)
        self.new_results: list[Hashable] = []  # requested keys finished, not yet taken by take_new_results()
        self.timeline: list[TimelineRecord] = []  # one per task run, from the workers' clocks
        self.idx = {key: n for n, key in enumerate(graph.nodes)}
        self.keys_by_idx = list(graph.nodes)
        self.loc: dict[Hashable, int] = {}  # key -> data field (or inline literal) that holds its value
        self.holders: dict[int, int] = {}  # field -> number of keys whose value it holds
        self.inline: dict[int, Any] = {}  # small literals, by field
        self.parts: dict[int, tuple[str, ...]] = {}  # field of a large value -> the fields of its parts
        self.messages: dict[int, tuple[bytes, list[Hashable]]] = {}  # in flight: message id -> (bytes, keys)
        self.next_msg = 0
        self.counter = 0
        self.to_release: list[str] = []
        self.mean_seconds: float | None = None
        self.retries: dict[Hashable, int] = dict(graph.annotations.get("retries", {}))
        self.user_priority: dict[Hashable, float] = dict(graph.annotations.get("priority", {}))
        self.window = 0
        self.errors: dict[Hashable, BaseException] = {}  # task key -> what it raised (first one first)
        self.to_withdraw: list[bytes] = []  # requeued messages given up on
        self.losses: dict[int, set[int]] = {}  # message id -> stamps of the deaths of workers running it
        self.rejections = Rejections(self.job, self.run_id, options.describe_server, clock)
        self.to_resend: list[bytes] = []  # messages a worker refused (dead-lettered): pushed again by fill()
        self.logs: list[tuple[Hashable, str, Any]] = []  # (key, worker, TaskLog) to show, not yet taken
        self.ask_live_workers = False  # the rejection policy wants the live workers' ids (see workers_seen)
        # the manager's dask config and environment variables, pickled once: every message carries them first
        self.exported = b"" if options.exported is None else dumps_task(options.exported)
        self.state: dict[str, Any] = {
            "dependencies": graph.dependencies,
            "dependents": graph.dependents,
            "waiting": {},
            "waiting_data": {k: set(v) if v else EMPTY for k, v in graph.dependents.items()},
            "cache": {},
            "ready": [],
            "running": set(),
            "finished": set(),
            "released": set(),
        }
        unpacked = unpack_callbacks(callbacks)  # type: ignore[no-untyped-call]
        self.start_cbs, self.start_state_cbs, self.pretask_cbs, self.posttask_cbs, self.finish_cbs = unpacked

    # ------------------------------------------------------------------ set-up
    def known_to_load(self) -> list[Hashable]:
        """The known keys (saved results) whose values :meth:`start` needs: ``options.load_known`` gives them."""
        redo, graph = self.options.redo, self.graph
        if not graph.known:
            return []
        return [
            key
            for key in graph.nodes
            if key in graph.known and (redo is None or key not in redo.fields) and graph.dependents[key]
        ]

    def start(self, known: dict[Hashable, Any]) -> tuple[dict[str, bytes], list[Part], dict[str, str]]:
        """Fill the initial state; ``known`` holds the values of :meth:`known_to_load`.

        Returns the large literals to upload (field -> sealed value, and the parts of the largest), and the values
        to copy from the redo hash of a failed run (field -> field there).
        """
        waiting = self.state["waiting"]
        uploads: dict[str, bytes] = {}
        parts: list[Part] = []
        copies: dict[str, str] = {}
        literals = []
        redo = self.options.redo
        for key, node in self.graph.nodes.items():
            if isinstance(node, DataNode) or key in self.graph.known:
                literals.append(key)
            elif self.graph.dependencies[key]:
                waiting[key] = set(self.graph.dependencies[key])
        for key in literals:
            field = self.idx[key]
            if key in self.graph.known and redo is not None and key in redo.fields:
                copies[str(field)] = redo.fields[key]
                if redo.parts.get(redo.fields[key]):
                    self.parts[field] = redo.parts[redo.fields[key]]
                    copies.update((name, name) for name in self.parts[field])
            elif key in self.graph.known:  # saved in the result directory
                if not self.graph.dependents[key]:
                    continue  # nothing here needs its value: the caller has it on disk
                self.add_literal(field, known[key], uploads, parts)
            else:
                self.add_literal(field, self.graph.nodes[key]({}), uploads, parts)
            self.loc[key] = field
            self.holders[field] = 1
        for key, node in self.graph.nodes.items():
            if not isinstance(node, DataNode) and key not in waiting and key not in self.graph.known:
                self.make_ready(key)
        for key in literals:
            for dependent in self.mark_finished(key, StoredResult(key, 0, "manager"), notify=False):
                self.make_ready(dependent)
        return uploads, parts, copies

    def add_literal(self, field: int, value: Any, uploads: dict[str, bytes], parts: list[Part]) -> None:
        """Keep a small literal here (it travels inside messages); pack a large one for upload."""
        if sizeof(value) <= INLINE_BYTES:
            self.inline[field] = value
            return
        sealed, value_parts = pack(dumps_result(value), self.options.signer, self.job)
        uploads[str(field)] = sealed
        if value_parts:
            parts += value_parts
            self.parts[field] = tuple(name for name, _ in value_parts)

    def redo_info(self) -> RedoInfo:
        """What a later ``redo=`` needs: the fields of every value still held (inputs of what failed)."""
        fields = {key: str(field) for key, field in self.loc.items() if field not in self.inline}
        parts = {str(field): names for field, names in self.parts.items()}
        return RedoInfo(self.job, self.run_id, fields, self.options.rng_seed, parts)

    def add_task(self, key: Hashable, node: Any) -> None:
        """Add an independent, requested task to a running run (streaming, as ``iterate``): it is ready now."""
        graph = self.graph
        graph.nodes[key] = node
        graph.dependencies[key], graph.dependents[key] = set(), set()
        graph.requested.append(key)
        self.requested.add(key)
        self.idx[key] = len(self.keys_by_idx)
        self.keys_by_idx.append(key)
        self.state["waiting_data"][key] = set()
        self.make_ready(key)

    def take_new_results(self) -> list[Hashable]:
        """Requested keys finished since the last call (for streaming consumers)."""
        new, self.new_results = self.new_results, []
        return new

    def forget(self, key: Hashable) -> None:
        """Drop a requested key's value after a streaming consumer took it."""
        self.requested.discard(key)
        self.release(key)

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
            rank = (-self.user_priority.get(key, 0), self.graph.priority.get(key, 0))
            heapq.heappush(self.state["ready"], (rank, self.counter, key))

    def mark_finished(self, key: Hashable, result: StoredResult, notify: bool = True) -> list[Hashable]:
        """Record a finished key, release inputs nobody needs any more; return dependents that became ready.

        ``notify`` calls the ``posttask`` callbacks (not for literals, which never had a ``pretask``).
        """
        state = self.state
        state["running"].discard(key)
        state["finished"].add(key)
        state["cache"][key] = result
        if self.options.on_result is not None and key in self.requested:
            self.new_results.append(key)
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
            if self.inline.pop(field, MISSING) is MISSING:
                self.to_release.append(str(field))
                self.to_release += self.parts.pop(field, ())

    # ------------------------------------------------------------------ dispatch
    def chunk_size(self, free_slots: int) -> int:
        ready = len(self.state["ready"])
        even = math.ceil(ready / max(1, free_slots))
        if self.mean_seconds is None or self.options.timeout is not None:
            return 1
        cap = max(1, int(TARGET_SECONDS / max(self.mean_seconds, 1e-6)))
        return max(1, min(even, cap))

    def chain_of(self, key: Hashable) -> list[Hashable]:
        """``key`` and the dependents that only it feeds, one after the other."""
        chain = [key]
        if not self.options.fuse_chains or self.options.timeout is not None:
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
        options = self.options
        batch = Batch(
            options.stop_on_error,
            inline,
            entries,
            options.timeout,
            options.rng_seed,
            options.log_threshold,
        )
        try:
            payload = join_payload(self.exported, dumps_task(batch))
        except Exception as e:
            raise self.unpicklable(batch, e) from e
        message = encode_task(self.run_id, msg_id, 0, payload, self.options.signer, self.job)
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
        """New messages, up to the window (and first the refused ones, again)."""
        out, self.to_resend = self.to_resend, []
        stopping = self.stopping
        while self.state["ready"] and len(self.messages) < self.window and not stopping:
            free = self.window - len(self.messages)
            out.append(self.build_message(self.chunk_size(free)))
        return out

    def take_commands(self, fill: bool = True) -> Commands:
        """What the loop must do now (and forget it here): with ``fill``, the messages to push (:meth:`fill`)."""
        commands = Commands(self.fill() if fill else [], self.to_release, self.to_withdraw, self.logs)
        commands.ask_live_workers, self.ask_live_workers = self.ask_live_workers, False
        self.to_release, self.to_withdraw, self.logs = [], [], []
        return commands

    # ------------------------------------------------------------------ events from the loop
    def set_workers(self, live: int) -> None:
        """The number of live workers: the window is ``ceil(live × queue_multiplier)`` messages."""
        self.window = math.ceil(live * self.options.queue_multiplier)

    def workers_seen(self, live: Iterable[str]) -> None:
        """The live workers' ids, asked for by :attr:`Commands.ask_live_workers`: raise
        :class:`~dask_redisparam.errors.MessagesRejected` if every one of them refuses the run's messages."""
        self.rejections.judge(live)

    def in_flight(self) -> list[tuple[int, bytes]]:
        """``(message id, message)`` of every message pushed and not finished (queued or running)."""
        return [(msg_id, message) for msg_id, (message, _) in self.messages.items()]

    def withdrawn(self, msg_ids: Iterable[int]) -> None:
        """These messages were taken back from the queue before any worker claimed them (stop on error)."""
        for msg_id in msg_ids:
            _, keys = self.messages.pop(msg_id)
            self.state["running"].difference_update(keys)

    # ------------------------------------------------------------------ completion
    def handle(self, record: bytes) -> None:
        """Apply one item of the run's ``done`` list, as read from Redis: a completion record, or a notice that a
        message was requeued after its worker died or that a worker refused it."""
        if record.startswith(REJECTED):
            try:
                notice = decode_rejected(record)
            except ValueError as e:
                logger.warning("manager: dropped a malformed rejection notice of run %s: %s", self.run_id, e)
                return
            self.handle_rejected(notice)
            return
        if record.startswith(LOST):
            try:
                lost = open_lost(record, self.options.signer, self.job, self.run_id)
            except (PayloadRejected, ValueError) as e:
                logger.warning(
                    "manager: ignored a loss notice of run %s (the message is requeued anyway; this death is not "
                    "counted): %s",
                    self.run_id,
                    e,
                )
                return
            self.handle_lost(*lost)
            return
        try:
            done = loads_completion(record, self.options.signer, self.job, self.run_id)
        except PayloadRejected as e:
            logger.warning("manager: dropped a completion record of run %s: %s", self.run_id, e)
            return
        self.handle_completion(done)

    def handle_completion(self, done: Completion) -> None:
        """Apply one (decoded, checked) completion record."""
        self.rejections.accepted(done.worker)
        sent = self.messages.pop(done.msg_id, None)
        if sent is None:  # a duplicate, or from a message already given up
            return
        if done.batch_error is not None:
            self.fail(sent[1][0], done.batch_error, done.worker)
            return
        became_ready: list[Hashable] = []
        again: list[Hashable] = []
        for outcome in done.outcomes:
            key = self.keys_by_idx[outcome.idx]
            if outcome.log is not None:
                self.logs.append((key, done.worker, outcome.log))
            if outcome.status != UNEVALUATED:
                self.timeline.append(TimelineRecord(key, done.worker, outcome.start, outcome.end, outcome.status == OK))
            if outcome.status == OK:
                seconds = outcome.end - outcome.start
                self.mean_seconds = seconds if self.mean_seconds is None else 0.8 * self.mean_seconds + 0.2 * seconds
                if outcome.nbytes or key in self.requested:
                    self.loc[key] = outcome.idx
                    self.holders[outcome.idx] = 1
                    if outcome.parts:
                        self.parts[outcome.idx] = outcome.parts
                became_ready += self.mark_finished(key, StoredResult(key, outcome.nbytes, done.worker))
            elif outcome.status == ERROR:
                assert outcome.error is not None
                if self.retry(key, outcome.error):
                    again.append(key)
                else:
                    self.fail(key, outcome.error, done.worker)
            else:  # not evaluated (an earlier entry of the message failed): send it again when it can run
                again.append(key)
        for key in again:
            self.redispatch(key)
        for key in became_ready:
            self.make_ready(key)

    def retry(self, key: Hashable, error: bytes) -> bool:
        """Whether a task that raised gets another run (and use up one of its retries)."""
        left = self.retries.get(key, self.options.retries)
        if left <= 0 or isinstance(loads_exception(error)[0], TaskTimeout):
            return False
        self.retries[key] = left - 1
        logger.info("manager: task %r raised; retrying (%d retries left)", key, left - 1)
        return True

    def redispatch(self, key: Hashable) -> None:
        """Put a task that ran without result back: ready if its inputs exist, else waiting for them."""
        self.state["running"].discard(key)
        unfinished = {d for d in self.graph.dependencies[key] if d not in self.state["finished"]}
        if unfinished:
            self.state["waiting"][key] = unfinished
        else:
            self.make_ready(key)

    def handle_rejected(self, notice: Rejection) -> None:
        """A worker refused a message and dead-lettered it: send it again (or give up; see
        :mod:`dask_redisparam.manager.rejections`)."""
        sent = self.messages.get(notice.msg_id)
        if sent is None or not self.rejections.add(notice):
            return
        if self.stopping:  # draining: nobody waits for it
            del self.messages[notice.msg_id]
            self.state["running"].difference_update(sent[1])
        else:
            self.to_resend.append(sent[0])
        if self.rejections.due():
            self.ask_live_workers = True

    def handle_lost(self, msg_id: int, stamp: int, worker: str) -> None:
        """A message went back to the queue after its worker died (``stamp``: when; each loss counts once)."""
        sent = self.messages.get(msg_id)
        if sent is None:
            return
        losses = self.losses.setdefault(msg_id, set())
        if stamp in losses:  # a repeated notice
            return
        losses.add(stamp)
        message, keys = sent
        logger.warning("manager: worker %s died running %d task(s) of run %s; retrying", worker, len(keys), self.run_id)
        if len(losses) > self.options.allowed_failures:
            del self.messages[msg_id]
            self.to_withdraw.append(message)
            for key in keys:
                self.state["running"].discard(key)
                self.errors.setdefault(key, KilledWorker(key, len(losses), worker, self.options.allowed_failures))

    @property
    def error(self) -> BaseException | None:
        """The first error of the run, or None."""
        return next(iter(self.errors.values()), None)

    @property
    def stopping(self) -> bool:
        """Whether the run stops dispatching (an error with ``stop_on_error``)."""
        return bool(self.errors) and self.options.stop_on_error

    def fail(self, key: Hashable, error_bytes: bytes, worker: str) -> None:
        """A task raised (for good: no retries left): record the error."""
        exc, tb, text = loads_exception(error_bytes)
        if isinstance(exc, TaskTimeout) and exc.key is None:  # detected by a supervisor, which knows no keys
            exc = TaskTimeout(key, exc.seconds)
        self.state["running"].discard(key)
        self.errors[key] = make_remote(exc, key, worker, text).with_traceback(tb)

    def unevaluated(self) -> list[Hashable]:
        """Requested keys neither computed nor failed."""
        finished = self.state["finished"]
        return [k for k in self.graph.requested if k not in finished and k not in self.errors]

    def result_keys(self) -> list[Hashable]:
        """The requested keys whose values the caller gets at the end (those not streamed away)."""
        return [k for k in self.graph.requested if k in self.requested]

    def locate(self, keys: Iterable[Hashable]) -> tuple[dict[Hashable, Any], list[Hashable], list[str]]:
        """Where the values of finished ``keys`` are: ``(values held here, keys in Redis, their fields)``; keys
        without a value (failed, or saved on disk and needed by nothing) are left out."""
        here: dict[Hashable, Any] = {}
        remote: list[Hashable] = []
        for key in keys:
            field = self.loc.get(key)
            if field is None:
                continue
            if field in self.inline:
                here[key] = self.inline[field]
            else:
                remote.append(key)
        return here, remote, [str(self.loc[k]) for k in remote]

    def outcome(self, results: dict[Hashable, Any]) -> dict[Hashable, Any]:
        """What the run returns, given the downloaded ``results``: them, or, when tasks failed, exceptions in place
        (``return_exceptions``); else raise (:func:`~dask_redisparam.errors.raise_partial`)."""
        if not self.errors:
            return results
        options = self.options
        if options.return_exceptions:
            out = dict(results)
            for key in self.graph.requested:
                if key not in out:
                    out[key] = self.errors.get(key) or Unevaluated(key)
            return out
        redo = self.redo_info() if options.redo_ttl > 0 else None
        raise_partial(
            dict(self.errors), results, self.unevaluated(), redo, self.error if options.stop_on_error else None
        )

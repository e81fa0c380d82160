"""The core of the manager's state machine for one run (one call of a ``get``): the state and its transitions.

:class:`RunCore` holds the run's state, shaped like ``dask.local``'s so that ``dask.diagnostics`` callbacks read
it unchanged, and the transitions that the other parts share: setting a run up, a task becoming ready, finishing,
its value being released. :class:`~dask_redisparam.manager.state.RunState` adds the dispatch
(:mod:`dask_redisparam.manager.run_dispatch`) and the events (:mod:`dask_redisparam.manager.run_events`). None of
it does I/O (no Redis, no files): the state takes *events* (completion records, loss and rejection notices, worker
counts, withdrawn messages, tasks fed to a stream) and hands out *commands*
(:class:`~dask_redisparam.manager.options.Commands`: messages to push or withdraw, values to delete, task logs to show,
"tell me the live workers"), which :mod:`dask_redisparam.manager` carries out against Redis. The state dict holds:

``dependencies`` / ``dependents``
    key -> set of keys, both directions (of the culled graph).
``waiting``
    key -> set of its dependencies that have not finished.
``waiting_data``
    key -> set of its dependents that have not finished; when it empties, the key's stored value is deleted
    from Redis unless the key was requested.
``ready``
    a heap of ``((-user priority, dask.order priority), n, key)``: tasks whose inputs all exist, highest
    ``dask.annotate(priority=...)`` first (as dask.distributed), then in ``dask.order`` order (a graph without user
    priorities: ``(dask.order priority, n, key)``).
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

import array
import heapq
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from dask._task_spec import Alias, DataNode
from dask.callbacks import unpack_callbacks
from dask.sizeof import sizeof

from ..sentinels import MISSING
from ..wire.bulk import Part, pack
from ..wire.serialize import dumps_result, dumps_task
from .graph import EMPTY, Graph
from .latency import RoundTrip
from .options import RunOptions, StoredResult
from .rejections import Rejections
from .resources import class_of, task_classes
from .timeline_store import Timeline

__all__ = ["INLINE_BYTES", "RunCore"]

INLINE_BYTES = 16 * 1024
"""Literals estimated smaller than this travel inside messages; larger ones are uploaded once."""


class RunCore:
    """The state of one run and the transitions its parts share; see the module docstring.

    It takes the parameters of :class:`~dask_redisparam.manager.state.RunState` (documented there), which is what
    callers build: this class declares every attribute, for the parts that derive from it.
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
        if options.stream_all and options.on_result is not None:  # every task's value goes to on_result
            known = graph.known
            self.requested.update(k for k, n in graph.nodes.items() if not isinstance(n, DataNode) and k not in known)
        self.new_results: list[Hashable] = []  # requested keys finished, not yet taken by take_new_results()
        self.streaming = options.on_result is not None or options.on_done is not None
        self.collect_results = self.streaming  # new_results collects the requested keys as they finish
        self.new_errors: list[Hashable] = []  # keys failed for good, not yet taken by take_new_errors() (futures)
        self.timeline = Timeline()  # one record per task run, from the workers' clocks
        self.retried = 0  # tasks that raised and were sent again (counted in the job's metrics by the loop)
        self.idx = graph.priority if graph.fields_in_order else {key: n for n, key in enumerate(graph.nodes)}
        self.keys_by_idx = list(graph.nodes)
        self.loc: dict[Hashable, int] = {}  # key -> data field (or inline literal) that holds its value
        self.holders = array.array("i", bytes(4 * len(self.keys_by_idx)))  # field -> keys whose value it holds
        self.inline: dict[int, Any] = {}  # small literals, by field
        self.parts: dict[int, tuple[str, ...]] = {}  # field of a large value -> the fields of its parts
        self.messages: dict[int, tuple[bytes, list[Hashable]]] = {}  # in flight: message id -> (bytes, keys)
        self.next_msg = 0
        self.counter = 0
        self.to_release: list[str] = []
        # resume: values to copy from dead runs (run id -> new field -> field there), identities of added tasks
        # (first field, bytes) not yet registered, added tasks waiting for their copy (key -> field there)
        self.adopted_copies: dict[str, dict[str, str]] = {}
        self.new_ids: list[tuple[int, bytes]] = []
        self.to_adopt: dict[Hashable, Any] = {}
        self.mean_seconds: float | None = None
        self.retries: dict[Hashable, int] = dict(graph.annotations.get("retries", {}))
        self.user_priority: dict[Hashable, float] = dict(graph.annotations.get("priority", {}))
        self.window = 0
        # worker resources (manager/resources.py): task -> class, ready heaps and windows per class, the class of
        # each message out (message id -> (class, message)) and of each message's bytes (where it is queued)
        self.clock = clock
        self.task_class: dict[Hashable, str] = task_classes(graph.annotations, graph.nodes)
        self.class_names: set[str] = set(self.task_class.values())
        self.ready_classes: dict[str, list[Any]] = {}
        self.class_window: dict[str, int] = {}
        self.msg_class: dict[int, tuple[str, bytes]] = {}
        self.routes: dict[bytes, str] = {}
        self.starved: dict[str, tuple[float, float]] = {}  # class -> (waiting since, last warning)
        self.live = 0  # live workers, as last counted
        self.round_trip = RoundTrip()  # the shortest turn of the loop (manager/latency.py)
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
        adopted = self.adopted
        return [
            key
            for key in graph.nodes
            if key in graph.known
            and (redo is None or key not in redo.fields)
            and key not in adopted
            and graph.dependents[key]
        ]

    @property
    def adopted(self) -> dict[Hashable, Any]:
        """Key -> :class:`~dask_redisparam.manager.resume.Adopted`: values this run takes from dead runs."""
        resumer = self.options.resumer
        return {} if resumer is None else resumer.adopted

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
        redo, adopted = self.options.redo, self.adopted
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
            elif key in self.graph.known and key in adopted:  # left by a dead run: copied before the run starts
                self.adopt(field, adopted[key])
            elif key in self.graph.known:  # saved in the result directory
                if not self.graph.dependents[key]:
                    continue  # nothing here needs its value: the caller has it on disk
                self.add_literal(field, known[key], uploads, parts)
            else:
                self.add_literal(field, self.graph.nodes[key]({}), uploads, parts)
            self.loc[key] = field
            self.holders[field] = 1
        ready, done, priority, heap = [], self.graph.known, self.graph.priority, self.state["ready"]
        for key, node in self.graph.nodes.items():
            if isinstance(node, DataNode) or key in waiting or key in done:
                continue
            if isinstance(node, Alias) or self.user_priority or (self.task_class and key in self.task_class):
                self.make_ready(key)  # (a task of a resource class goes to its class's heap)
            else:  # the heap's entry, as make_ready makes it; the heap is made once below
                self.counter += 1
                ready.append((priority.get(key, 0), self.counter, key))
        heap += ready
        heapq.heapify(heap)
        for key in literals:
            for dependent in self.mark_finished(key, StoredResult(key, 0, "manager"), notify=False):
                self.make_ready(dependent)
        return uploads, parts, copies

    def add_literal(self, field: int, value: Any, uploads: dict[str, bytes], parts: list[Part]) -> None:
        """Keep a small literal here (it travels inside messages); pack a large one for upload."""
        if sizeof(value) <= INLINE_BYTES:
            self.inline[field] = value
            return
        sealed, value_parts = pack(dumps_result(value), self.options.signer, self.job, field)
        uploads[str(field)] = sealed
        if value_parts:
            parts += value_parts
            self.parts[field] = tuple(name for name, _ in value_parts)

    def adopt(self, field: int, adopted: Any) -> None:
        """Take the value of ``field`` (and its parts) from a dead run: a copy for the loop to make."""
        copies = self.adopted_copies.setdefault(adopted.run_id, {})
        copies[str(field)] = adopted.field
        if adopted.parts:
            self.parts[field] = adopted.parts
            copies.update((name, name) for name in adopted.parts)

    def add_task(
        self,
        key: Hashable,
        node: Any,
        dependencies: Iterable[Hashable] = (),
        identity: bytes | None = None,
        adopted: Any = None,
        resources: Any = None,
    ) -> None:
        """Add a requested task to a running run (streaming, as ``iterate``, or a future's ``submit``).

        ``dependencies`` are keys already in the run whose values the task reads in Redis: pending, or finished
        with their value held (not released). The task is ready now if they all finished, else it waits for them;
        if one of them failed, the task fails with the same error (:meth:`take_new_errors`). With ``adopted`` (its
        value left by a dead run; only for a task without dependencies), it finishes once the loop has copied the
        value (:meth:`take_adoptions`). ``identity`` is registered for a later resume. ``resources`` (as
        ``dask.annotate``'s) route it to workers that have them (a malformed value raises, naming the task).
        """
        graph, state = self.graph, self.state
        cls = class_of(key, resources)
        if cls is not None:
            self.task_class[key] = cls
            self.class_names.add(cls)
        deps = set(dependencies)
        graph.nodes[key] = node
        graph.dependencies[key], graph.dependents[key] = deps, set()
        graph.requested.append(key)
        self.requested.add(key)
        if self.idx is graph.priority:  # shared with the priorities (fields_in_order): an added task has none
            self.idx = dict(self.idx)
        field = self.idx[key] = len(self.keys_by_idx)
        self.keys_by_idx.append(key)
        self.holders.append(0)
        state["waiting_data"][key] = set()
        if identity is not None and self.options.resume_ttl > 0:
            if self.new_ids and self.new_ids[-1][0] + len(self.new_ids[-1][1]) // len(identity) == field:
                self.new_ids[-1] = (self.new_ids[-1][0], self.new_ids[-1][1] + identity)
            else:
                self.new_ids.append((field, identity))
        if adopted is not None and not deps:
            self.adopt(field, adopted)
            self.to_adopt[key] = field
            return
        failed = next((dep for dep in deps if dep in self.errors), None)
        if failed is not None:
            self.record_error(key, self.errors[failed])
            return
        for dep in deps:
            graph.dependents[dep] = _mutable(graph.dependents[dep])
            graph.dependents[dep].add(key)
            state["waiting_data"][dep] = _mutable(state["waiting_data"][dep])
            state["waiting_data"][dep].add(key)
        unfinished = {dep for dep in deps if dep not in state["finished"]}
        if unfinished:
            state["waiting"][key] = unfinished
        else:
            self.make_ready(key)

    def take_adoptions(self) -> dict[str, dict[str, str]]:
        """The copies from dead runs to make now (run id -> new field -> field there); then :meth:`adopted_done`."""
        copies, self.adopted_copies = self.adopted_copies, {}
        return copies

    def adopted_done(self, missing: set[str]) -> None:
        """The copies of :meth:`take_adoptions` were made; ``missing``: new fields whose value was gone (their
        tasks run). The added tasks adopted finish now."""
        adopting, self.to_adopt = self.to_adopt, {}
        for key, field in adopting.items():
            if str(field) in missing:
                self.parts.pop(field, None)
                self.make_ready(key)
                continue
            self.loc[key] = field
            self.holders[field] = 1
            for dependent in self.mark_finished(key, StoredResult(key, 0, "resumed"), notify=False):
                self.make_ready(dependent)

    def hand_over(self, key: Hashable, keep: bool) -> None:
        """A streaming consumer took a requested key's value: drop it from Redis, or (``keep``: for a later resume)
        keep it there until the run ends, no longer counted among the results."""
        if keep:
            self.requested.discard(key)
        else:
            self.forget(key)

    def take_new_results(self) -> list[Hashable]:
        """Requested keys finished since the last call (for streaming consumers)."""
        new, self.new_results = self.new_results, []
        return new

    def take_new_errors(self) -> list[tuple[Hashable, BaseException]]:
        """Keys failed for good since the last call, with their errors (streaming with ``on_done``: futures)."""
        new, self.new_errors = self.new_errors, []
        return [(key, self.errors[key]) for key in new if key in self.errors]

    def forget(self, key: Hashable) -> None:
        """Drop a requested key's value after a streaming consumer took it (once no dependent needs it)."""
        self.requested.discard(key)
        if not self.state["waiting_data"].get(key):
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
                shared = self.state["cache"].get(target)  # the alias's value is its target's: so is its size
                stack.extend(self.mark_finished(key, StoredResult(key, shared.nbytes if shared else 0, "manager")))
                continue
            self.counter += 1
            rank: Any = self.graph.priority.get(key, 0)  # without user priorities, dask.order's alone (a pair less)
            if self.user_priority:
                rank = (-self.user_priority.get(key, 0), rank)
            cls = self.task_class.get(key) if self.task_class else None
            heap = self.state["ready"] if cls is None else self.ready_classes.setdefault(cls, [])
            heapq.heappush(heap, (rank, self.counter, key))

    def classes(self) -> list[str]:
        """The resource classes of the run's tasks (sorted)."""
        return sorted(self.class_names)

    def any_ready(self) -> bool:
        """Whether some task is ready (without resources, or of some resource class)."""
        return bool(self.state["ready"]) or any(self.ready_classes.values())

    def mark_finished(self, key: Hashable, result: StoredResult, notify: bool = True) -> list[Hashable]:
        """Record a finished key, release inputs nobody needs any more; return dependents that became ready.

        ``notify`` calls the ``posttask`` callbacks (not for literals, which never had a ``pretask``).
        """
        state = self.state
        state["running"].discard(key)
        state["finished"].add(key)
        state["cache"][key] = result
        if self.collect_results and key in self.requested:
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
            if self.inline.pop(field, MISSING) is MISSING:
                self.to_release.append(str(field))
                self.to_release += self.parts.pop(field, ())

    def record_error(self, key: Hashable, error: BaseException) -> None:
        """A task failed for good (its first error is kept). Streaming with ``on_done`` (futures), the failure is
        final at once: the task lets go of its inputs, and the tasks waiting for it fail with the same error."""
        if key in self.errors:
            return
        self.errors[key] = error
        if self.options.on_done is None:
            return
        state, graph = self.state, self.graph
        stack = [key]
        while stack:
            failed = stack.pop()
            self.errors.setdefault(failed, error)
            self.new_errors.append(failed)
            state["running"].discard(failed)
            for dep in graph.dependencies[failed]:
                holders = state["waiting_data"].get(dep)
                if holders:
                    holders.discard(failed)
                    if not holders and dep not in self.requested and dep in state["finished"]:
                        self.release(dep)
            for dependent in graph.dependents[failed]:
                if state["waiting"].pop(dependent, None) is not None:
                    stack.append(dependent)

    @property
    def error(self) -> BaseException | None:
        """The first error of the run, or None."""
        return next(iter(self.errors.values()), None)

    @property
    def stopping(self) -> bool:
        """Whether the run stops dispatching (an error with ``stop_on_error``)."""
        return bool(self.errors) and self.options.stop_on_error


def _mutable(keys: set[Hashable]) -> set[Hashable]:
    """``keys``, or a new set in place of the shared empty one (:data:`~dask_redisparam.manager.graph.EMPTY`)."""
    return keys if isinstance(keys, set) else set(keys)

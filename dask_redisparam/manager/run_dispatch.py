"""Dispatch in the manager's state machine: ready tasks leave in messages, within the window.

:class:`Dispatch` (a part of :class:`~dask_redisparam.manager.state.RunState`, over the state of
:mod:`dask_redisparam.manager.run_core`) takes chunks of ready tasks, each with its linear chain of dependents, into
signed task messages, with the small literals they need inline, and hands them out with the other commands
(:meth:`Dispatch.take_commands`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Any

from dask._task_spec import Alias, GraphNode, Task, TaskRef

from ..errors import SerializationError
from ..wire.protocol import Batch, Entry, encode_task, join_payload
from ..wire.serialize import dumps_task
from .options import Commands
from .run_core import RunCore

__all__ = ["TARGET_SECONDS", "Dispatch"]

TARGET_SECONDS = 0.1
"""How long one message should keep a worker busy, in seconds (chunking of small tasks)."""


def call_of(node: Any) -> Any:
    """What an entry carries for ``node``: the *call* of a plain ``Task`` (see
    :class:`~dask_redisparam.wire.protocol.Entry`), else the node itself.

    A ``Task`` of this exact type, without keyword arguments, whose arguments are literals and inputs (``TaskRef``,
    or the ``Alias`` that dask's conversion makes of a legacy argument naming a key; no other nested task spec)
    runs as ``func(*args)`` with the inputs' values in place, which is what its ``__call__`` does; anything else
    (containers of inputs, subclasses, keywords) travels as it is.

    Examples
    --------
    >>> from operator import add
    >>> from dask._task_spec import Task, TaskRef
    >>> call_of(Task("y", add, TaskRef("x"), 1))
    (<built-in function add>, ('x', 1), (0,))
    >>> call_of(Task("z", add, 1, 2))
    (<built-in function add>, (1, 2))
    >>> call_of(Task("w", add, Alias("x"), 2))  # a legacy tuple (add, "x", 2) names its input by key
    (<built-in function add>, ('x', 2), (0,))
    """
    if type(node) is not Task or node.kwargs:
        return node
    args = node.args
    refs = None
    for i, arg in enumerate(args):
        if type(arg) is Alias or isinstance(arg, TaskRef):  # an input (a legacy graph's argument that names a key)
            refs = [i] if refs is None else [*refs, i]
        elif isinstance(arg, GraphNode):
            return node
    if refs is None:
        return (node.func, args)
    return (node.func, tuple(_input_key(arg) if i in refs else arg for i, arg in enumerate(args)), tuple(refs))


def _input_key(arg: Any) -> Any:
    """The key of the input that a ``TaskRef`` or an argument ``Alias`` stands for."""
    return arg.target if type(arg) is Alias else arg.key


class Dispatch(RunCore):
    """Building the run's messages: chunk sizes, chains, messages, the window (see the module docstring)."""

    def chunk_size(self, free_slots: int, ready: list[Any] | None = None) -> int:
        """How many ready tasks the next message takes, with ``free_slots`` messages left in the window.

        One until a task has run on a worker (no measured duration yet) and with a ``timeout``; else the ready tasks
        spread evenly over the free slots, at most as many as run in about ``TARGET_SECONDS``.
        """
        ready_count = len(self.state["ready"] if ready is None else ready)
        even = math.ceil(ready_count / max(1, free_slots))
        if self.mean_seconds is None or self.options.timeout is not None:
            return 1
        cap = max(1, int(TARGET_SECONDS / max(self.mean_seconds, 1e-6)))
        return max(1, min(even, cap))

    def chain_of(self, key: Hashable) -> list[Hashable]:
        """``key`` and the dependents that only it feeds (of the same resource class), one after the other."""
        chain = [key]
        if not self.options.fuse_chains or self.options.timeout is not None:
            return chain
        nodes, dependents, dependencies = self.graph.nodes, self.graph.dependents, self.graph.dependencies
        waiting = self.state["waiting"]
        while True:
            (nxt,) = dependents[chain[-1]] if len(dependents[chain[-1]]) == 1 else (None,)
            if nxt is None or isinstance(nodes[nxt], Alias) or dependencies[nxt] != {chain[-1]}:
                return chain
            if self.task_class and self.task_class.get(nxt) != self.task_class.get(chain[-1]):
                return chain
            del waiting[nxt]
            chain.append(nxt)

    def build_message(self, n_tasks: int, ready: list[Any] | None = None, cls: str | None = None) -> bytes:
        """Take up to ``n_tasks`` ready tasks (plus their chains) into one message: from the tasks without
        resources, or from the ``ready`` heap of the resource class ``cls``."""
        running = self.state["running"]
        ready = self.state["ready"] if ready is None else ready
        entries: list[Entry] = []
        inline: dict[int, Any] = {}
        keys: list[Hashable] = []
        identities = self.graph.identities.of if self.options.rng_seed is not None else None
        nodes, dependencies, idx, loc, literals = (
            self.graph.nodes,
            self.graph.dependencies,
            self.idx,
            self.loc,
            self.inline,
        )
        requested, pretask, new = self.requested, self.pretask_cbs, tuple.__new__
        while ready and len(entries) < n_tasks:
            _, _, head = heapq.heappop(ready)
            chain = self.chain_of(head) if self.graph.dependents[head] else (head,)
            for pos, key in enumerate(chain):
                deps = []
                for dep in dependencies[key]:
                    field = idx[dep] if pos and dep == chain[pos - 1] else loc[dep]
                    deps.append((dep, field))
                    if field in literals:
                        inline[field] = literals[field]
                last = pos == len(chain) - 1
                store = last or key in requested
                identity = None if identities is None else identities.get(key)
                entries.append(new(Entry, (idx[key], key, call_of(nodes[key]), tuple(deps), store, identity)))
                keys.append(key)
                running.add(key)
                for cb in pretask:
                    cb(key, nodes, self.state)
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
        if cls is not None:
            self.msg_class[msg_id] = (cls, message)
            self.routes[message] = cls
        return message

    def unpicklable(self, batch: Batch, error: Exception) -> SerializationError:
        """The error to raise when ``batch`` does not pickle: it names the first task that does not, if any."""
        for entry in batch.entries:
            try:
                dumps_task(entry.node)
            except Exception as e:
                return SerializationError(f"cannot pickle task {entry.key!r} (its function or arguments): {e}")
        return SerializationError(f"cannot pickle the inputs of a message of run {self.run_id}: {error}")

    def fill(self) -> list[bytes]:
        """New messages, up to the window (and first the refused ones, again); per resource class, up to its
        window (:mod:`dask_redisparam.manager.resources`)."""
        out, self.to_resend = self.to_resend, []
        stopping = self.stopping
        out_by_class: dict[str, int] = {}
        if self.msg_class:
            for msg_id in [m for m in self.msg_class if m not in self.messages]:  # finished: forget their class
                self.routes.pop(self.msg_class.pop(msg_id)[1], None)
            for cls, _ in self.msg_class.values():
                out_by_class[cls] = out_by_class.get(cls, 0) + 1
        general = len(self.messages) - len(self.msg_class)
        while self.state["ready"] and general < self.window and not stopping:
            out.append(self.build_message(self.chunk_size(self.window - general)))
            general += 1
        for cls, ready in self.ready_classes.items():
            window, sent = self.class_window.get(cls, 0), out_by_class.get(cls, 0)
            while ready and sent < window and not stopping:
                out.append(self.build_message(self.chunk_size(window - sent, ready), ready, cls))
                sent += 1
        return out

    def take_commands(self, fill: bool = True) -> Commands:
        """What the loop must do now (and forget it here): with ``fill``, the messages to push (:meth:`fill`)."""
        commands = Commands(self.fill() if fill else [], self.to_release, self.to_withdraw, self.logs)
        commands.ask_live_workers, self.ask_live_workers = self.ask_live_workers, False
        self.to_release, self.to_withdraw, self.logs = [], [], []
        return commands

"""Futures in the manager's state machine: tasks a long-lived run holds for their consumers, released one by one.

:class:`Futures` (a part of :class:`~dask_redisparam.manager.state.RunState`, over the state of
:mod:`dask_redisparam.manager.run_core`) serves :class:`~dask_redisparam.executor.RedisExecutor`: a run whose tasks
are added while it runs (:meth:`~dask_redisparam.manager.run_core.RunCore.add_task`, with dependencies on earlier
tasks) and whose values stay in Redis until their future lets go of them (:meth:`Futures.drop`). A task still on the
manager (waiting for its inputs, or ready and not yet in a message) can be withdrawn (:meth:`Futures.cancel`), and so
can one alone in a message that no worker has claimed yet (:meth:`Futures.queued_message`, taken back by the loop).
Like the other parts it does no I/O: what it releases goes out with the next
:meth:`~dask_redisparam.manager.run_dispatch.Dispatch.take_commands`.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable

from .run_core import RunCore

__all__ = ["Futures"]


class Futures(RunCore):
    """Holding and releasing the tasks of a run that serves futures (see the module docstring)."""

    @property
    def pending(self) -> int:
        """How many tasks of the run are neither finished nor failed."""
        return len(self.graph.nodes) - len(self.state["finished"]) - len(self.errors)

    def drop(self, key: Hashable) -> None:
        """Nobody outside needs ``key`` any more (its future was released).

        A finished task's value is deleted from Redis unless a pending task still reads it (then it goes when that
        one finishes); a pending task still runs and its value is deleted as soon as it finishes; a failed task is
        forgotten.
        """
        if key not in self.graph.nodes:
            return
        self.requested.discard(key)
        if key in self.errors:
            del self.errors[key]
            self._forget_node(key)
        elif key in self.state["finished"] and not self.state["waiting_data"][key]:
            self.release(key)
            self._forget_node(key)

    def cancel(self, key: Hashable) -> bool:
        """Withdraw a task that has not left the manager (waiting for inputs, or ready) and that no other task
        needs; False if it is in a message (see :meth:`queued_message`), finished, failed, or needed."""
        state = self.state
        if key not in self.graph.nodes or key in state["running"] or key in state["finished"] or key in self.errors:
            return False
        if state["waiting_data"][key]:
            return False
        if state["waiting"].pop(key, None) is None:
            cls = self.task_class.get(key)
            heap = state["ready"] if cls is None else self.ready_classes.get(cls, [])
            ready = [entry for entry in heap if entry[2] != key]
            if len(ready) == len(heap):
                return False
            heapq.heapify(ready)
            heap[:] = ready
        self._cancelled(key)
        return True

    def queued_message(self, key: Hashable) -> tuple[int, bytes] | None:
        """``(message id, message)`` of the message that carries ``key`` alone, if no other task needs it: the loop
        may take it back from the queue (``LREM``) before a worker claims it, then tell :meth:`cancel_withdrawn`."""
        if key not in self.state["running"] or self.state["waiting_data"][key]:
            return None
        for msg_id, (message, keys) in self.messages.items():
            if keys == [key]:
                return msg_id, message
        return None

    def cancel_withdrawn(self, msg_id: int) -> None:
        """The message of :meth:`queued_message` was taken back from the queue before any worker claimed it: its
        task is cancelled."""
        _, keys = self.messages.pop(msg_id)
        for key in keys:
            self.state["running"].discard(key)
            self._cancelled(key)

    def _cancelled(self, key: Hashable) -> None:
        state = self.state
        self.requested.discard(key)
        for dep in self.graph.dependencies[key]:
            holders = state["waiting_data"][dep]
            holders.discard(key)
            if not holders and dep not in self.requested and dep in state["finished"]:
                self.release(dep)
        self._forget_node(key)

    def _forget_node(self, key: Hashable) -> None:
        """Drop every trace of a key that is done with (its value already released, if it had one)."""
        graph, state = self.graph, self.state
        graph.nodes.pop(key, None)
        graph.dependents.pop(key, None)
        for dep in graph.dependencies.pop(key, ()):
            dependents = graph.dependents.get(dep)
            if isinstance(dependents, set):
                dependents.discard(key)
        state["waiting_data"].pop(key, None)
        state["finished"].discard(key)
        state["released"].discard(key)
        state["cache"].pop(key, None)
        self.idx.pop(key, None)

"""Recovery in the manager's state machine: putting a run back on its feet after a failover lost some of its writes.

:class:`Recovery` (a part of :class:`~dask_redisparam.manager.state.RunState`, over the state of
:mod:`dask_redisparam.manager.run_core`) takes what the new primary holds of the run (the fields of its data hash,
the ids of its messages found there) and applies :func:`~dask_redisparam.manager.failover.plan_recovery`: lost
values' tasks go back to ``ready`` or ``waiting`` (with the tasks that read them), superseded messages are dropped
and withdrawn, lost messages are pushed again (with the next commands), lost literals are packed for upload. Like
the other parts it does no I/O.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Hashable, Iterable

from dask._task_spec import DataNode

from ..errors import RunLost
from ..wire.bulk import Part
from .failover import Recovery as Plan
from .failover import plan_recovery
from .options import StoredResult
from .run_core import RunCore, _mutable

__all__ = ["Recovery"]

logger = logging.getLogger(__name__)


class Recovery(RunCore):
    """Applying :func:`~dask_redisparam.manager.failover.plan_recovery` to the run (see the module docstring)."""

    def recover(self, present: set[str], found: set[int]) -> tuple[Plan, dict[str, bytes], list[Part]]:
        """The server holds the data fields ``present`` and the messages ``found`` of this run: run again, push again
        and upload again what was lost. Returns the plan and the literals to upload (field -> sealed value, parts).

        Raises
        ------
        RunLost
            A lost value that the run did not compute (``redo=``, resume, a result directory).
        """
        state, graph = self.state, self.graph
        finished, waiting_data = state["finished"], state["waiting_data"]
        value_of: dict[Hashable, tuple[str, ...]] = {}
        held_inline: set[Hashable] = set()
        for key, field in self.loc.items():
            if field in self.inline:
                held_inline.add(key)
            else:
                value_of[key] = (str(field), *self.parts.get(field, ()))
        needed = [k for k in value_of if k in finished and (k in self.requested or waiting_data.get(k))]
        resending = set()
        for message in self.to_resend:
            resending.add(int(message.split(b"|", 3)[2]))
        plan = plan_recovery(
            in_flight={m: keys for m, (_, keys) in self.messages.items()},
            found=found,
            resending=resending,
            finished=finished,
            value_of=value_of,
            present=present,
            needed=needed,
            held_inline=held_inline,
            dependencies=graph.dependencies,
            literals={k for k in graph.nodes if isinstance(graph.nodes[k], DataNode) and k not in graph.known},
            known=graph.known,
        )
        if plan.unrecoverable:
            shown = ", ".join(repr(k) for k in sorted(plan.unrecoverable, key=repr)[:5])
            raise RunLost(
                f"a Redis failover lost values of run {self.run_id} of job {self.job!r} that it did not compute and "
                f"cannot make again ({shown}: copied for redo=, resumed, or read from a result directory): compute "
                "again"
            )
        uploads: dict[str, bytes] = {}
        parts: list[Part] = []
        if plan.empty:
            return plan, uploads, parts
        self._run_again(plan)
        for key in plan.reupload:
            field = self.idx[key]
            if self.loc.get(key) is None:  # released meanwhile: held again for the task that runs again
                self.loc[key] = field
                self.holders[field] += 1
                state["released"].discard(key)
                state["cache"][key] = StoredResult(key, 0, "manager")
            self.inline.pop(field, None)
            self.add_literal(field, graph.nodes[key]({}), uploads, parts)
        self.to_resend += [self.messages[m][0] for m in plan.resend]
        return plan, uploads, parts

    def _run_again(self, plan: Plan) -> None:
        """Un-finish ``plan.recompute``, drop the superseded messages, and put their tasks and the tasks reading a
        value that runs again back to ``waiting`` or ``ready``."""
        state, graph = self.state, self.graph
        finished, waiting, waiting_data = state["finished"], state["waiting"], state["waiting_data"]
        again = set(plan.recompute)
        for key in plan.recompute:
            finished.discard(key)
            state["released"].discard(key)
            state["cache"].pop(key, None)
            field = self.loc.pop(key, None)
            if field is not None:
                self.holders[field] -= 1
                if self.holders[field] <= 0:
                    self.holders[field] = 0
                    self.parts.pop(field, None)
            for dep in graph.dependencies[key]:  # it reads its inputs again
                waiting_data[dep] = _mutable(waiting_data[dep])
                waiting_data[dep].add(key)
        for msg_id in plan.supersede:
            message, keys = self.messages.pop(msg_id)
            self.to_withdraw.append(message)  # if no worker claimed it yet; a result that comes is a repeat
            state["running"].difference_update(keys)
            again.update(keys)
        for ready in (state["ready"], *self.ready_classes.values()):  # of every resource class too
            kept = [entry for entry in ready if not (set(graph.dependencies[entry[2]]) & plan.recompute)]
            if len(kept) != len(ready):
                again.update({entry[2] for entry in ready} - {entry[2] for entry in kept})
                ready[:] = kept
                heapq.heapify(ready)
        for key in plan.recompute:  # tasks already waiting for other inputs now wait for this one too
            for dependent in graph.dependents[key]:
                if dependent in waiting:
                    waiting[dependent].add(key)
        self._requeue(again)

    def _requeue(self, keys: Iterable[Hashable]) -> None:
        waiting, finished = self.state["waiting"], self.state["finished"]
        for key in keys:
            unfinished = {d for d in self.graph.dependencies[key] if d not in finished}
            if unfinished:
                waiting[key] = unfinished
            else:
                self.make_ready(key)

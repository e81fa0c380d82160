"""Events in the manager's state machine: what the loop reports about the run's messages and workers.

:class:`Events` (a part of :class:`~dask_redisparam.manager.state.RunState`, over the state of
:mod:`dask_redisparam.manager.run_core`) applies the items of the run's ``done`` list (completion records, loss notices
after a worker died, rejection notices after a worker refused a message), the number and ids of the live workers
and the messages withdrawn from the queue: results finish their tasks, errors are retried or recorded, lost
messages count their attempts up to :class:`~dask_redisparam.errors.KilledWorker`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable

from ..errors import KilledWorker, PayloadRejected, ReplicationFailed, TaskTimeout
from ..wire.protocol import (
    ERROR,
    LOST,
    OK,
    REJECTED,
    UNEVALUATED,
    UNREPLICATED,
    Completion,
    Rejection,
    decode_rejected,
    decode_unreplicated,
    loads_completion,
    open_lost,
)
from ..wire.resources import Resources, describe, parse_class
from ..wire.serialize import loads_exception, make_remote
from . import latency
from . import resources as _resources
from .options import StoredResult
from .run_core import RunCore

__all__ = ["Events"]

logger = logging.getLogger(__name__)


class Events(RunCore):
    """Applying the loop's events to the run's state (see the module docstring)."""

    # ------------------------------------------------------------------ events from the loop
    def set_workers(self, live: int) -> None:
        """The number of live workers: the window is ``ceil(live × queue_multiplier)`` messages, more when the round
        trip to Redis is significant (:func:`~dask_redisparam.manager.latency.window`), but for a fed run (iterate:
        the window bounds what is read ahead of the reducer)."""
        self.live = live
        # a fed run (iterate, streams) keeps the plain window: it bounds the elements read ahead of the reducer
        rtt = None if self.options.feed is not None else self.round_trip.seconds
        self.window = latency.window(live, self.options.queue_multiplier, rtt, self.mean_seconds)

    def turn_took(self, seconds: float) -> None:
        """A turn's round trip took ``seconds``: the window may grow (:mod:`~dask_redisparam.manager.latency`)."""
        if self.round_trip.seen(seconds):
            self.set_workers(self.live)

    def set_capacity(self, workers: Iterable[tuple[str, Resources]]) -> None:
        """The live worker processes as ``(daemon id, its resources)``: the window of each resource class
        (:func:`~dask_redisparam.manager.resources.class_windows`)."""
        self.class_window = _resources.class_windows(workers, self.class_names, self.options.queue_multiplier)

    def waiting_for_resources(self) -> bool:
        """Whether ready tasks wait for a resource class that no live worker can run."""
        return any(ready and not self.class_window.get(cls) for cls, ready in self.ready_classes.items())

    def resource_warnings(self) -> list[str]:
        """What to warn about now: each class whose ready tasks waited :data:`~.resources.RESOURCE_WARNING`
        seconds (since the last warning about it) for a live worker that has its resources."""
        now, out, delay = self.clock(), [], _resources.RESOURCE_WARNING
        for cls, ready in self.ready_classes.items():
            if not ready or self.class_window.get(cls) or self.stopping:
                self.starved.pop(cls, None)
                continue
            since, warned = self.starved.setdefault(cls, (now, now))
            if now - warned >= delay or (warned == since and now - since >= delay):
                key = min(ready)[2]
                out.append(
                    f"manager: no live worker of job {self.job!r} has the resources {describe(parse_class(cls))} "
                    f"that task {key!r} needs ({len(ready)} task(s) of run {self.run_id} wait); waiting for one "
                    "(dask-redisparam-worker --resources ...)"
                )
                self.starved[cls] = (since, now + 1e-9)
        return out

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
        if record.startswith(UNREPLICATED):
            self.handle_unreplicated(record)
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

    def handle_unreplicated(self, record: bytes) -> None:
        """A worker with ``replicas_required=True`` saw too few replicas acknowledge a completion: fail the run."""
        try:
            n = decode_unreplicated(record)
        except ValueError as e:
            logger.warning("manager: dropped a malformed replication notice of run %s: %s", self.run_id, e)
            return
        key = self.keys_by_idx[n.idx] if 0 <= n.idx < len(self.keys_by_idx) else f"field {n.idx}"
        raise ReplicationFailed(
            f"the result of task {key!r} (message {n.msg_id} of run {self.run_id}, worker {n.worker}) was acknowledged "
            f"by {n.acked} of the {n.wanted} replica(s) asked for within replicas_timeout by the primary {n.primary} "
            "(replicas_required=True): a failover could lose it. Check the primary's replicas (INFO replication), or "
            "lower replicas"
        )

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
        keys_by_idx, idx_of, requested, loc, holders = (
            self.keys_by_idx,
            self.idx,
            self.requested,
            self.loc,
            self.holders,
        )
        worker, mean = done.worker, self.mean_seconds
        ran: list[Hashable] = []  # the timeline's columns of this record
        starts: list[float] = []
        ends: list[float] = []
        oks: list[bool] = []
        for i, status, error, nbytes, start, end, log, parts in done.outcomes:
            key = keys_by_idx[i]
            if log is not None:
                self.logs.append((key, worker, log))
            if status != UNEVALUATED:
                ran.append(key)
                starts.append(start)
                ends.append(end)
                oks.append(status == OK)
            if status == OK:
                seconds = end - start
                mean = seconds if mean is None else 0.8 * mean + 0.2 * seconds
                if nbytes or key in requested:
                    field = idx_of[key]  # the run's own int object: no new one per task
                    loc[key] = field
                    holders[field] = 1
                    if parts:
                        self.parts[field] = parts
                became_ready += self.mark_finished(key, StoredResult(key, nbytes, worker))
            elif status == ERROR:
                assert error is not None
                if self.retry(key, error):
                    again.append(key)
                else:
                    self.fail(key, error, worker)
            else:  # not evaluated (an earlier entry of the message failed): send it again when it can run
                again.append(key)
        self.mean_seconds = mean
        self.timeline.add(worker, ran, starts, ends, oks)
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
        self.retried += 1
        logger.info("manager: task %r raised; retrying (%d retries left)", key, left - 1)
        return True

    def redispatch(self, key: Hashable) -> None:
        """Put a task that ran without result back: ready if its inputs exist, else waiting for them."""
        self.state["running"].discard(key)
        unfinished = {d for d in self.graph.dependencies[key] if d not in self.state["finished"]}
        failed = next((d for d in unfinished if d in self.errors), None)
        if failed is not None and self.options.on_done is not None:  # futures: it fails with its input, at once
            self.record_error(key, self.errors[failed])
        elif unfinished:
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
                self.record_error(key, KilledWorker(key, len(losses), worker, self.options.allowed_failures))

    def fail(self, key: Hashable, error_bytes: bytes, worker: str) -> None:
        """A task raised (for good: no retries left): record the error."""
        exc, tb, text = loads_exception(error_bytes)
        if isinstance(exc, TaskTimeout) and exc.key is None:  # detected by a supervisor, which knows no keys
            exc = TaskTimeout(key, exc.seconds)
        self.state["running"].discard(key)
        self.record_error(key, make_remote(exc, key, worker, text).with_traceback(tb))

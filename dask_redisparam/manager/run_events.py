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

from ..errors import KilledWorker, PayloadRejected, TaskTimeout
from ..wire.protocol import (
    ERROR,
    LOST,
    OK,
    REJECTED,
    UNEVALUATED,
    Completion,
    Rejection,
    decode_rejected,
    loads_completion,
    open_lost,
)
from ..wire.serialize import loads_exception, make_remote
from . import latency
from .options import StoredResult, TimelineRecord
from .run_core import RunCore

__all__ = ["Events"]

logger = logging.getLogger(__name__)


class Events(RunCore):
    """Applying the loop's events to the run's state (see the module docstring)."""

    # ------------------------------------------------------------------ events from the loop
    def set_workers(self, live: int) -> None:
        """The number of live workers: the window is ``ceil(live × queue_multiplier)`` messages, more when the round
        trip to Redis is significant (:func:`~dask_redisparam.manager.latency.window`)."""
        self.live = live
        self.window = latency.window(live, self.options.queue_multiplier, self.round_trip.seconds, self.mean_seconds)

    def turn_took(self, seconds: float) -> None:
        """A turn's round trip took ``seconds``: the window may grow (:mod:`~dask_redisparam.manager.latency`)."""
        if self.round_trip.seen(seconds):
            self.set_workers(self.live)

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

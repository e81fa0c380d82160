"""The manager's side of task messages that workers refuse: notices, sending again, giving up.

A worker that refuses a task message (not a task message of its protocol version, or a failed signature check)
never unpickles it: it moves it to the job's dead-letter list and, if the run is alive, pushes a *rejection
notice* to the run's ``done`` list (:func:`~dask_redisparam.wire.protocol.encode_rejected`), naming itself and the
reason. The notice cannot be signed (the refusing worker may have no secret), so the manager treats it as
evidence, not proof:

- it sends the message again, so that another worker can run it (a forged notice thus costs at most a duplicate
  run, whose second result the completion script and the manager drop);
- it warns once per refusing worker, naming it and what to fix (one misconfigured worker in a good pool);
- it fails the run with :class:`~dask_redisparam.errors.MessagesRejected` when every live worker of the job has
  refused a message of the run and none was accepted (no completion record) for :data:`REJECT_SECONDS`.

Examples
--------
>>> from dask_redisparam.wire.protocol import Rejection
>>> rejections = Rejections("job", "r1", "localhost:6379")
>>> rejections.add(Rejection(0, 0, "n1", "no-secret", "w1")), rejections.add(Rejection(0, 0, "n1", "no-secret", "w1"))
(True, False)
>>> rejections.due(now=rejections.since + 1)  # not yet: ask for the live workers only after REJECT_SECONDS
False
>>> rejections.due(now=rejections.since + 60), rejections.due(now=rejections.since + 60.5)  # once a second
(True, False)
>>> rejections.judge(["w1", "w2"], now=rejections.since + 60)  # w2 may be a good worker: keep going
>>> rejections.judge(["w1"], now=rejections.since + 62)
Traceback (most recent call last):
...
dask_redisparam.errors.MessagesRejected: every live worker of job 'job' on localhost:6379 refused ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from ..backend import keys
from ..errors import MessagesRejected
from ..wire.protocol import REJECTION_REASONS, Rejection

__all__ = ["FIXES", "REJECT_SECONDS", "Rejections"]

logger = logging.getLogger(__name__)

REJECT_SECONDS = 5.0
"""Seconds without an accepted message, while every live worker refuses the run's messages, before the run fails."""

FIXES = {
    "no-secret": "This manager signs its messages and those workers have no secret: set REDISPARAM_SECRET (or "
    "REDISPARAM_SECRET_FILE) in the workers' environment, as for the manager.",
    "unsigned": "This manager has no secret and those workers accept only signed messages: give the manager the "
    "workers' secret (the secret setting, REDISPARAM_SECRET or REDISPARAM_SECRET_FILE).",
    "unknown-key": "Those workers do not know the key id this manager signs with: give the manager and the workers "
    "the same secret (REDISPARAM_SECRET or REDISPARAM_SECRET_FILE); when rotating keys, give the workers the new "
    "key before the manager signs with it.",
    "bad-signature": "The manager and those workers have different secrets under the same key id: give them the "
    "same REDISPARAM_SECRET (or REDISPARAM_SECRET_FILE).",
    "version": "Those workers run another version of dask-redisparam: install the same version on the manager "
    "and the workers.",
}
"""What to do, for each reason a worker gives (:data:`~dask_redisparam.wire.protocol.REJECTION_REASONS`)."""

_SEE_LOGS = "See those workers' logs ('rejected a task message')."


def fix_for(reason: str) -> str:
    """What to do about a rejection for ``reason``."""
    return FIXES.get(reason, _SEE_LOGS)


class Rejections:
    """The rejection notices of one run: who refused its messages, why, and whether to give up.

    Parameters
    ----------
    jobname, run_id : str
        The run.
    server : str
        The server, as the messages name it.
    clock : callable, optional
        Monotonic seconds (default :func:`time.monotonic`; tests inject their own).
    """

    def __init__(self, jobname: str, run_id: str, server: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.jobname, self.run_id, self.server, self.clock = jobname, run_id, server, clock
        self.nonces: set[str] = set()  # notices applied (a notice may be read twice after a lost reply)
        self.reasons: dict[str, str] = {}  # refusing worker -> its last reason
        self.accepted_by: set[str] = set()  # workers that completed a message of the run
        self.since: float | None = None  # first rejection since a message was last accepted (monotonic)
        self.last_check = 0.0

    def accepted(self, worker: str) -> None:
        """A completion record came in: the messages are readable (by ``worker`` at least)."""
        self.since = None
        self.accepted_by.add(worker)

    def add(self, notice: Rejection) -> bool:
        """Record a notice; False if it was applied already. Warns the first time a worker refuses."""
        if notice.nonce in self.nonces:
            return False
        self.nonces.add(notice.nonce)
        if notice.worker not in self.reasons:
            logger.warning(
                "manager: worker %s refused a task message of run %s of job %r (%s); sent it again for the other "
                "workers. %s",
                notice.worker,
                self.run_id,
                self.jobname,
                REJECTION_REASONS.get(notice.reason, notice.reason),
                fix_for(notice.reason),
            )
        self.reasons[notice.worker] = notice.reason
        if self.since is None:
            self.since = self.clock()
        return True

    def due(self, now: float | None = None) -> bool:
        """Whether to ask for the live workers now (a round trip; then :meth:`judge` them): rejections for
        :data:`REJECT_SECONDS` and none accepted; True at most once a second."""
        now = self.clock() if now is None else now
        if self.since is None or now - self.since < REJECT_SECONDS or now - self.last_check < 1.0:
            return False
        self.last_check = now
        return True

    def judge(self, live_workers: Iterable[str], now: float | None = None) -> None:
        """Raise :class:`MessagesRejected` if every one of ``live_workers`` refused and none was accepted for
        :data:`REJECT_SECONDS`."""
        now = self.clock() if now is None else now
        live = set(live_workers)
        refusing = {w: r for w, r in self.reasons.items() if w not in self.accepted_by}
        if self.since is None or now - self.since < REJECT_SECONDS or not live or not live <= set(refusing):
            return
        by_reason: dict[str, list[str]] = {}
        for worker, reason in sorted(refusing.items()):
            by_reason.setdefault(reason, []).append(worker)
        what = "; ".join(
            f"{REJECTION_REASONS.get(reason, reason)} (worker {', '.join(workers[:5])}"
            f"{f' and {len(workers) - 5} more' if len(workers) > 5 else ''})"
            for reason, workers in by_reason.items()
        )
        fixes = " ".join(fix_for(reason) for reason in by_reason)
        raise MessagesRejected(
            f"every live worker of job {self.jobname!r} on {self.server} refused the task messages of run "
            f"{self.run_id} (dead-lettered, not unpickled), and none was accepted for {now - self.since:.0f} s: "
            f"{what}. {fixes} The refused messages are in {keys.dead(self.jobname)}."
        )

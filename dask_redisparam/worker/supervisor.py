"""Worker processes: start them, keep them running, stop them.

:class:`Supervisor` runs inside the ``dask-redisparam-worker`` command: it starts ``nworkers`` worker processes
(each one ``python -m dask_redisparam.worker --child``), starts a new one when one dies unexpectedly, and passes
stop signals on (first signal: warm stop, second: cold). :class:`LocalWorkers` is how a manager launches such a
command in the background (``is_worker=None``) and stops exactly it.

A worker process that keeps dying young is restarted with a growing delay, and the supervisor gives up after a
few failed starts, logging the process's last error line (:mod:`dask_redisparam.worker.restarts`). For that, each worker
process's stderr goes through a pipe that the supervisor reads and passes on to its own stderr, line by line.

Worker processes get ``PYTHONHASHSEED`` as ``dask.multiprocessing`` sets it, so hashing of strings agrees across
workers; credentials travel in the environment, never on a command line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType

from ..backend import Backend
from ..backend.stats import TaskStats
from ..config.address import RedisAddress
from ..errors import TaskTimeout
from ..wire.bulk import Report
from ..wire.protocol import Completion, decode_header, dumps_completion, lost_notices
from ..wire.serialize import dumps_exception
from ..wire.signing import signer_from_environment
from .execute import WATCHDOG_ENV
from .restarts import EXIT_CONFIG, HEALTHY_UPTIME, ChildOutput, OutputPipes, RestartPolicy
from .server import pdeathsig_preexec

__all__ = ["LocalWorkers", "Supervisor", "worker_environment"]

logger = logging.getLogger(__name__)

WORKER_MODULE = "dask_redisparam.worker"
KILL_GRACE = 1.0
"""Seconds past a task's timeout before the supervisor kills its worker (the worker's own alarm goes first)."""


def worker_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker process: ours, ``extra``, and ``PYTHONHASHSEED`` (6640 unless set)."""
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PYTHONHASHSEED", "6640")
    return env


class Supervisor:
    """Run and look after ``nworkers`` worker processes.

    Parameters
    ----------
    nworkers : int
        How many worker processes.
    child_args : sequence of str
        Command-line options for each worker (``--jobname``...; never secrets).
    env : mapping
        Extra environment for the workers (the server URL with its password goes here).
    base_id : str
        Worker ids are ``<base_id>-<n>`` (``<base_id>`` alone when ``nworkers`` is 1); a replacement for a worker
        that died gets a suffix ``.<k>``, since the dead worker's lease may still be live.
    restart : bool
        Start a new worker process when one dies while not stopping, with the crash-loop backoff of
        :mod:`dask_redisparam.worker.restarts`.
    reap : tuple of (RedisAddress, jobname), optional
        When given, a worker process that dies is reaped at once: what it held goes back to the queue (counting
        one failed attempt), instead of waiting for its lease to expire.
    """

    def __init__(
        self,
        nworkers: int,
        child_args: Sequence[str],
        env: Mapping[str, str],
        base_id: str,
        *,
        restart: bool = True,
        reap: tuple[RedisAddress, str] | None = None,
    ) -> None:
        self.reap = reap
        self.nworkers = nworkers
        self.child_args = list(child_args)
        self.env = worker_environment(env)
        self.base_id = base_id
        self.restart = restart
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.incarnations: dict[int, int] = {}
        self.watchdogs: dict[int, tuple[int, bytearray]] = {}  # slot -> (read end of its pipe, unread bytes)
        self.deadlines: dict[int, tuple[float, float]] = {}  # slot -> (monotonic deadline, limit) of its task
        self.signals = 0
        self.policy = RestartPolicy()
        self.started: dict[int, float] = {}  # slot -> monotonic time its process started
        self.restart_at: dict[int, float] = {}  # slot -> monotonic time to start its next process
        self.timed_out: set[int] = set()  # slots whose process this supervisor killed (a task's timeout)
        self.outputs = OutputPipes()  # the processes' stderr
        self.output_of: dict[int, tuple[int, ChildOutput]] = {}  # slot -> its process's stderr pipe, what it wrote
        self.giving_up = False
        self.status = 0

    def worker_id(self, slot: int) -> str:
        """The id of the current process in ``slot``."""
        wid = self.base_id if self.nworkers == 1 else f"{self.base_id}-{slot}"
        k = self.incarnations.get(slot, 0)
        return wid if k == 0 else f"{wid}.{k}"

    def spawn(self, slot: int) -> None:
        """Start the worker process of ``slot``."""
        argv = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--child",
            "--id",
            self.worker_id(slot),
            *self.child_args,
        ]
        self._close_watchdog(slot)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        err_read, err_write, output = self.outputs.open()
        env = dict(self.env, **{WATCHDOG_ENV: str(write_end)})
        try:
            self.children[slot] = subprocess.Popen(
                argv, env=env, pass_fds=(write_end,), stderr=err_write, preexec_fn=pdeathsig_preexec()
            )
        except BaseException:
            self.outputs.close(err_read)
            raise
        finally:
            os.close(write_end)
            os.close(err_write)
        self.watchdogs[slot] = (read_end, bytearray())
        self.output_of[slot] = (err_read, output)
        self.started[slot] = time.monotonic()

    def _close_watchdog(self, slot: int) -> None:
        self.deadlines.pop(slot, None)
        if slot in self.watchdogs:
            os.close(self.watchdogs.pop(slot)[0])

    def _check_deadlines(self) -> None:
        """Read what workers reported; kill a worker whose task outlived its deadline by :data:`KILL_GRACE`."""
        now = time.monotonic()
        for slot, (fd, buffer) in self.watchdogs.items():
            try:
                while chunk := os.read(fd, 4096):
                    buffer += chunk
            except BlockingIOError:
                pass
            *lines, rest = bytes(buffer).split(b"\n")
            buffer[:] = rest
            if lines:
                deadline, limit = (float(x) for x in lines[-1].split())
                self.deadlines[slot] = (deadline, limit)
            deadline, limit = self.deadlines.get(slot, (0.0, 0.0))
            child = self.children.get(slot)
            if deadline and now > deadline + KILL_GRACE and child is not None and child.poll() is None:
                wid = self.worker_id(slot)
                logger.warning("supervisor: worker %s is stuck past its task's timeout; killing it", wid)
                child.kill()
                child.wait()
                self.timed_out.add(slot)
                self.deadlines[slot] = (0.0, 0.0)
                self._report_timeout(wid, limit)

    def _report_timeout(self, worker_id: str, limit: float) -> None:
        """Fail the message the killed worker held with a TaskTimeout (not retried, unlike a crash)."""
        if self.reap is None:
            return
        address, jobname = self.reap
        try:
            with _backend(address) as backend:
                for message in backend.held_messages(jobname, worker_id):
                    run_id, msg_id, attempt, _ = decode_header(message)
                    error = TaskTimeout(None, limit)
                    completion = Completion(msg_id, attempt, worker_id, [], dumps_exception(error, None))
                    record = dumps_completion(completion, signer_from_environment(self.env), jobname, run_id)
                    stats = TaskStats()  # the task is not known here (its message is not unpickled)
                    stats.add("other", False, time.time() - limit, time.time())
                    report = Report(jobname, worker_id, run_id, message, record, ntasks=1, stats=stats.arguments())
                    backend.complete(report)
        except Exception as e:  # the lease will expire and a manager will requeue it then
            logger.warning("supervisor: could not report the timeout of worker %s: %s", worker_id, e)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Start the workers and supervise them until all have stopped.

        Returns 0; 1 when a worker failed and was not replaced, or kept failing at start (see
        :mod:`dask_redisparam.worker.restarts`); :data:`~dask_redisparam.worker.restarts.EXIT_CONFIG` when a worker
        could not work as configured.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.nworkers):
                self.spawn(slot)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.outputs.close_all()

    def _reap(self, worker_id: str) -> bool:
        """Requeue what a dead worker held at once; returns whether it held anything."""
        if self.reap is None:
            return False
        address, jobname = self.reap
        try:
            notice = lost_notices(signer_from_environment(self.env), jobname, worker_id)
            with _backend(address) as backend:
                moved = backend.reap_worker(jobname, worker_id, notice)
        except Exception as e:  # the lease will expire and a manager will reap it then
            logger.warning("supervisor: could not requeue the tasks of worker %s: %s", worker_id, e)
            return False
        if moved:
            logger.warning("supervisor: requeued %d message(s) of dead worker %s", len(moved), worker_id)
        return bool(moved)

    def _watch(self) -> int:
        self.status = 0
        while self.children or self.restart_at:
            self.outputs.pump(0.1)
            self._check_deadlines()
            for slot, child in list(self.children.items()):
                code = child.poll()
                if code is not None:
                    self._ended(slot, code)
            if self.signals:
                self.restart_at.clear()
            now = time.monotonic()
            for slot, at in list(self.restart_at.items()):
                if now >= at:
                    del self.restart_at[slot]
                    self.spawn(slot)
        self.outputs.close_all()
        return self.status

    def _ended(self, slot: int, code: int) -> None:
        """The process of ``slot`` exited with ``code``: reap it, then restart it (after a delay) or give up."""
        del self.children[slot]
        self._close_watchdog(slot)
        wid = self.worker_id(slot)
        fd, output = self.output_of.pop(slot, (-1, ChildOutput()))
        self.outputs.read(fd)  # all it wrote before it died is in the pipe
        uptime = time.monotonic() - self.started.pop(slot, 0.0)
        held = self._reap(wid) if code != 0 else False
        timed_out = slot in self.timed_out
        self.timed_out.discard(slot)
        if self.signals or self.giving_up or not self.restart or code == 0:
            logger.info("supervisor: worker %s exited with code %s", wid, code)
            if code != 0 and not self.signals and not self.giving_up:
                self.status = self.status or 1
            return
        if code == EXIT_CONFIG:
            self._give_up(wid, f"cannot work as configured (exit code {code})", output, EXIT_CONFIG)
            return
        failed_start = not held and code != -signal.SIGKILL
        delay = 0.0 if timed_out else self.policy.after_death(slot, uptime, start_failure=failed_start)
        if delay is None:
            failures = self.policy.failures(slot)
            reason = f"failed {failures} times in a row within {HEALTHY_UPTIME:.0f} s of starting (exit code {code})"
            self._give_up(wid, reason, output, 1)
            return
        logger.warning(
            "supervisor: worker %s died (exit code %s) after %.1f s; starting a new one%s",
            wid,
            code,
            uptime,
            f" in {delay:.2f} s" if delay else "",
        )
        self.incarnations[slot] = self.incarnations.get(slot, 0) + 1
        self.restart_at[slot] = time.monotonic() + delay

    def _give_up(self, worker_id: str, reason: str, output: ChildOutput, status: int) -> None:
        """Stop restarting: log why with the process's last error line, stop the other processes (warm)."""
        last = output.last_error() or "(it wrote nothing to stderr)"
        logger.error("supervisor: worker %s %s; giving up. Its last error: %s", worker_id, reason, last)
        self.giving_up = True
        self.status = status
        self.restart_at.clear()
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)


class LocalWorkers:
    """A background ``dask-redisparam-worker`` command started by a manager, and stopped by it.

    Parameters
    ----------
    nworkers : int
        Number of worker processes.
    jobname : str
        The job they serve.
    env : mapping
        Extra environment (``REDISPARAM_URL`` with the password).
    base_id : str
        Prefix of the workers' ids.
    extra_args : sequence of str
        More options for the command (e.g. ``--heartbeat-ttl 5``).
    """

    def __init__(
        self, nworkers: int, jobname: str, env: Mapping[str, str], base_id: str, extra_args: Sequence[str] = ()
    ) -> None:
        self.nworkers = nworkers
        self.jobname = jobname
        self.base_id = base_id
        argv = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--nworkers",
            str(nworkers),
            "--jobname",
            jobname,
            "--id",
            base_id,
            *extra_args,
        ]
        self.process = subprocess.Popen(argv, env=worker_environment(env), preexec_fn=pdeathsig_preexec())

    @property
    def ids(self) -> list[str]:
        """The ids of the first incarnation of each worker."""
        if self.nworkers == 1:
            return [self.base_id]
        return [f"{self.base_id}-{n}" for n in range(self.nworkers)]

    def is_running(self) -> bool:
        """Whether the supervisor process still runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (warm), then kill what is left after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("local workers of job %s did not stop in %.0f s; killing them", self.jobname, timeout)
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def _backend(address: RedisAddress) -> Iterator[Backend]:
    """A short-lived connection (one retry) for reporting on a worker, closed after use."""
    backend = Backend(address, retries=1)
    try:
        yield backend
    finally:
        backend.close()

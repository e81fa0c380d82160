"""The keeper of the durable local mode: the detached process that runs the embedded server and its workers.

:func:`~dask_redisparam.worker.durable.attach_or_start` starts it (as the hidden command ``dask-redisparam server
run``) in a new session; it forks once more, so that it is nobody's child and survives its starter (a notebook
kernel that is SIGKILLed). Then :class:`Keeper`:

1. starts ``redis-server`` (an :class:`~dask_redisparam.worker.server.EmbeddedRedis`) with the append-only file
   (``appendfsync everysec``) in the state directory, listening on ``<state_dir>/redis.sock`` only, with the
   password made from the kept secret;
2. starts the local workers (a :class:`~dask_redisparam.worker.supervisor.LocalWorkers` supervisor) on the job,
   waits until they registered, writes ``server.json`` and tells its starter on the ready pipe;
3. watches: a supervisor that fails is started again (three times at most, then the keeper stops; one whose
   workers were all asked to stop, by ``stop-all``, stops the keeper), and after
   ``idle`` seconds with no live run, no busy worker, an empty queue and no process reattaching, or on SIGTERM
   (``dask-redisparam server stop``), it stops: the workers first (warm), then the server (which writes its
   append-only file out), and removes its record.

The server and the supervisor get SIGTERM when the keeper dies (``PR_SET_PDEATHSIG``), so a SIGKILLed keeper
leaves nothing running; the next starter finds the stale record and starts anew on the same append-only file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Sequence
from types import FrameType

from ..backend import Backend
from ..config.names import SECRET_ENV, SECRET_FILE_ENV
from ..errors import RedisParamError, ServerError
from . import durable
from .server import EmbeddedRedis
from .supervisor import LocalWorkers

__all__ = ["Keeper"]

logger = logging.getLogger(__name__)

MAX_SUPERVISOR_RESTARTS = 3
"""How often the keeper starts its workers' supervisor again before it stops (the supervisor itself restarts
worker processes; its exit means it gave up)."""


class Keeper:
    """Run a durable server and its workers in ``state_dir`` until idle for ``idle`` seconds or told to stop.

    Parameters
    ----------
    state_dir : str
        The private state directory (:func:`~dask_redisparam.worker.durable.prepare_state_dir`).
    jobname : str
        The job the workers serve.
    workers : int
        How many worker processes.
    idle : float
        Seconds without work after which it stops.
    worker_args : sequence of str
        More options of the workers' command (heartbeat settings).
    start_timeout : float
        Seconds to wait for the workers to register.
    """

    def __init__(
        self,
        state_dir: str,
        jobname: str,
        workers: int,
        idle: float,
        worker_args: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.state_dir = durable.prepare_state_dir(state_dir)
        self.jobname = jobname
        self.workers = workers
        self.idle = idle
        self.worker_args = ["--quiet", *worker_args]
        self.start_timeout = start_timeout
        self.stopping = False
        self.server: EmbeddedRedis | None = None
        self.local: LocalWorkers | None = None
        self.backend: Backend | None = None
        self.env: dict[str, str] = {}  # the workers' extra environment: the server's URL with its password, the secret

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self, ready_fd: int | None = None) -> int:
        """Detach (fork), start everything, tell ``ready_fd`` and watch until stopped; returns the exit status."""
        if os.fork() > 0:
            os._exit(0)  # the starter waits for this one; the keeper goes on in the child, an orphan
        os.umask(0o077)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            record = self._start()
        except BaseException as e:
            logger.error("durable keeper in %s: cannot start: %s", self.state_dir, e)
            self._say(ready_fd, f"error: {e}")
            self._shutdown()
            return 1
        self._say(ready_fd, "ready")
        logger.info(
            "durable keeper %d: server pid %d on %s, %d worker(s) of job %s; stops after %g s idle",
            os.getpid(),
            record.server,
            record.socket,
            self.workers,
            self.jobname,
            self.idle,
        )
        try:
            status = self._watch(record)
        finally:
            self._shutdown()
        return status

    @staticmethod
    def _say(fd: int | None, word: str) -> None:
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, word.replace("\n", " ").encode() + b"\n")
            os.close(fd)

    def _start(self) -> durable.DurableServer:
        secret = durable.read_secret(self.state_dir)
        if secret is None:
            raise ServerError(f"no secret in {self.state_dir!r}: start the durable mode through RedisParam")
        password = durable.password_of(secret)
        self.server = EmbeddedRedis(
            password=password, appendonly=True, appendfsync="everysec", dir=self.state_dir, rundir=self.state_dir
        ).start()
        address = self.server.address
        self.backend = Backend.connect(address)
        os.environ.pop(SECRET_FILE_ENV, None)
        self.env = {"REDISPARAM_URL": address.to_url(show_password=True), SECRET_ENV: secret}
        self.local = self._launch()
        self._wait_for_workers(self.local)
        assert self.server.pid is not None
        record = durable.DurableServer(
            state_dir=self.state_dir,
            keeper=os.getpid(),
            server=self.server.pid,
            supervisor=self.local.process.pid,
            socket=address.path or "",
            jobname=self.jobname,
            worker_ids=self.local.ids,
            started=time.time(),
            idle=self.idle,
        )
        durable.write_record(record)
        return record

    def _launch(self) -> LocalWorkers:
        return LocalWorkers(self.workers, self.jobname, self.env, "d" + uuid.uuid4().hex[:7], self.worker_args)

    def _wait_for_workers(self, local: LocalWorkers) -> None:
        assert self.backend is not None
        deadline = time.monotonic() + self.start_timeout
        while not set(local.ids) <= set(self.backend.live_workers(self.jobname)):
            if not local.is_running():
                raise ServerError(f"the durable workers of job {self.jobname!r} exited at start")
            if self.stopping:
                raise ServerError("stopped while starting")
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the durable workers of job {self.jobname!r} did not start in {self.start_timeout:g} s"
                )
            time.sleep(0.02)

    def _watch(self, record: durable.DurableServer) -> int:
        """Watch until idle or stopped; returns the exit status."""
        assert self.backend is not None and self.server is not None
        tick = max(0.05, min(1.0, self.idle / 4))
        record_path = os.path.join(self.state_dir, durable.RECORD)
        last_active = time.monotonic()
        seen = _mtime(record_path)
        restarts = 0
        while not self.stopping:
            self._sleep(tick)
            if self.stopping:
                break
            if not self.server.is_running:
                logger.error("durable keeper: the redis-server exited; stopping the workers")
                return 1
            if self.local is not None and not self.local.is_running():
                if self.local.process.returncode == 0:  # its workers were asked to stop (stop-all): so is the pool
                    logger.info("durable keeper: the workers stopped (stop-all); stopping")
                    return 0
                restarts += 1
                if restarts > MAX_SUPERVISOR_RESTARTS:
                    logger.error("durable keeper: the workers' supervisor exited %d times; stopping", restarts)
                    return 1
                logger.warning("durable keeper: the workers' supervisor exited; starting it again")
                self.local = self._launch()
            now = time.monotonic()
            mtime = _mtime(record_path)
            if mtime != seen:  # a process reattached
                seen, last_active = mtime, now
            if self._busy():
                last_active = now
            if now - last_active >= self.idle and self._stop_if_still_idle():
                logger.info("durable keeper: idle for %g s; stopping", self.idle)
                return 0
        logger.info("durable keeper: asked to stop")
        return 0

    def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def _busy(self) -> bool:
        assert self.backend is not None
        try:
            return any(self.backend.job_activity(self.jobname))
        except RedisParamError as e:
            logger.warning("durable keeper: cannot read the job's activity: %s", e)
            return True

    def _stop_if_still_idle(self) -> bool:
        """Under the starters' lock (no one reattaches meanwhile): still idle? then remove the record."""
        with durable.state_lock(self.state_dir):
            record_path = os.path.join(self.state_dir, durable.RECORD)
            if self._busy() or time.time() - _mtime(record_path) < self.idle:
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record_path)
            self._shutdown()
            return True

    def _shutdown(self) -> None:
        """Stop the workers (warm), then the server; remove the record if it is still this keeper's."""
        local, self.local = self.local, None
        backend, self.backend = self.backend, None
        server, self.server = self.server, None
        if local is not None:
            local.stop()
        if backend is not None:
            backend.close()
        if server is not None:
            server.stop()
        record = durable.read_record(self.state_dir)
        if record is not None and record.keeper == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.state_dir, durable.RECORD))


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0

"""The life cycle of a :class:`~dask_redisparam.RedisParam` (R's ``bpstart`` / ``bpstop`` / ``bpisup``): its
connection, the embedded server, its local workers, and the foreground worker of ``is_worker=True``.

:class:`ParamLifecycle` is the base of :class:`~dask_redisparam.RedisParam` (which documents its public methods
with the rest of its interface); :class:`~dask_redisparam.param_scheduling.ParamScheduler` runs graphs on it.

``start()`` connects (starting an :class:`~dask_redisparam.worker.server.EmbeddedRedis` when no server is configured),
chooses the secret, and, with ``is_worker=None``, starts ``workers`` local worker processes under one
supervisor and waits for them to register; ``is_worker=True`` then serves tasks in the foreground until stopped.
``stop()`` undoes it all, in the reverse order.

With ``durable=True`` and no server configured, ``start()`` reattaches to (or starts) the detached server and
workers of the durable local mode (:mod:`dask_redisparam.worker.durable`) instead, with the secret kept in its
state directory; ``stop()`` then only detaches, and they go on running for the next process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from . import pool
from .backend import Backend
from .config.address import RedisAddress
from .config.settings import Settings
from .errors import ConfigurationError, WorkerError
from .manager.loop import count_and_reap
from .manager.options import TimelineRecord
from .wire.signing import SECRET_ENV, SECRET_FILE_ENV, Signer, signer_from_environment
from .worker.durable import DurableServer, attach_or_start
from .worker.loop import Worker
from .worker.server import EmbeddedRedis
from .worker.supervisor import LocalWorkers

if TYPE_CHECKING:
    from .dashboard import Dashboard

__all__ = ["ParamLifecycle"]

logger = logging.getLogger(__name__)

_P = TypeVar("_P", bound="ParamLifecycle")


class ParamLifecycle:
    """A param's settings and what it has started: server, connection, local workers.

    Parameters
    ----------
    settings : Settings
        The validated settings (:class:`~dask_redisparam.RedisParam` builds them from its arguments).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._server: EmbeddedRedis | None = None
        self._backend: Backend | None = None
        self._local: LocalWorkers | None = None
        self._dashboard: Dashboard | None = None
        self._lock = threading.RLock()
        self._timeline: Sequence[TimelineRecord] = []
        self._signer: Signer | None = None
        self._durable: DurableServer | None = None

    def _signs(self) -> bool:
        """Whether this param's messages are signed (started), or will be (not started: as start() decides)."""
        if self.is_up:
            return self._signer is not None
        settings = self.settings
        embedded = settings.address is None and settings.is_worker is None  # start() generates a secret
        return (
            settings.secret is not None
            or bool(os.environ.get(SECRET_ENV) or os.environ.get(SECRET_FILE_ENV))
            or embedded
        )

    @property
    def is_up(self) -> bool:
        """Whether the param is started (R's ``bpisup``)."""
        return self._backend is not None

    @property
    def dashboard_link(self) -> str | None:
        """The address of the live dashboard of a started param with ``dashboard=True`` (as distributed's
        ``client.dashboard_link``), e.g. ``http://127.0.0.1:41234/``; None otherwise."""
        return self._dashboard.link if self._dashboard is not None else None

    @property
    def backend(self) -> Backend:
        """The connection of a started param."""
        if self._backend is None:
            raise ConfigurationError("the RedisParam is not started; call start() or use it in a with block")
        return self._backend

    def start(self: _P) -> _P:
        """Connect (starting the embedded server if none is configured) and start the local workers.

        With ``is_worker=True`` this serves tasks in the foreground until the worker is stopped.
        """
        with self._lock:
            if self.is_up:
                return self
            settings = self.settings
            address = settings.address
            if address is None:
                if settings.is_worker is not None:
                    raise ConfigurationError(
                        f"is_worker={settings.is_worker} needs a Redis server that others can reach: set host/port"
                        " or url, or REDISPARAM_URL / REDISPARAM_HOST (the embedded server is private)"
                    )
                if settings.durable:
                    address = self._attach_durable()
                else:
                    self._server = EmbeddedRedis().start()
                    address = self._server.address
            elif settings.durable:
                raise ConfigurationError(
                    f"durable=True runs the embedded server detached, but a server is configured "
                    f"({address.describe()}): drop durable=True, or the server settings (and REDISPARAM_URL / "
                    "REDISPARAM_HOST) to use the durable local mode"
                )
            if self._durable is None:
                self._signer = self._make_signer(embedded=self._server is not None)
            try:
                self._backend = Backend.connect(address)
                self._backend.check_job_access(settings.jobname, wait=settings.replicas_required)
                if settings.is_worker is None and self._durable is None:
                    self._local = self._launch_local(settings.workers)
                    self._wait_for_local_workers()
                if settings.dashboard:  # imported here: prometheus_client and http.server cost a worker's start time
                    from .dashboard import Dashboard

                    self._dashboard = Dashboard(address, settings.jobname, address="127.0.0.1:0").start()
            except BaseException:
                self.stop()
                raise
        if settings.is_worker:
            self._serve_foreground()
        return self

    def _attach_durable(self) -> RedisAddress:
        """Reattach to the durable local server and workers (or start them); their address."""
        settings = self.settings
        if settings.is_worker is not None:
            raise ConfigurationError(
                f"durable=True needs is_worker=None (it starts the workers), not {settings.is_worker}"
            )
        if settings.secret is not None:
            raise ConfigurationError("durable=True keeps its own secret in state_dir: do not give secret=")
        args = [
            "--heartbeat-interval",
            str(settings.heartbeat_interval),
            "--heartbeat-ttl",
            str(settings.heartbeat_ttl),
        ]
        if settings.resources:  # shared by the durable mode's workers
            args += ["--resources", ",".join(f"{name}={amount!r}" for name, amount in settings.resources)]
        record, secret = attach_or_start(
            settings.state_dir or "",
            settings.jobname,
            settings.workers,
            idle=settings.durable_idle,
            worker_args=args,
            start_timeout=settings.start_timeout,
        )
        self._durable = record
        self._signer = Signer.from_secret(secret)
        how = "reattached to" if record.reattached else "started"
        logger.info(
            "manager: %s the durable server (pid %d) in %s, workers of job %s",
            how,
            record.server,
            record.state_dir,
            record.jobname,
        )
        return record.address(secret)

    @property
    def durable_server(self) -> DurableServer | None:
        """The durable local server this param is attached to (``durable=True``, started), else None."""
        return self._durable

    @property
    def _local_ids(self) -> list[str] | None:
        """The ids of the workers this param started (or, durable, reattached to), else None."""
        if self._durable is not None:
            return self._durable.worker_ids
        return None if self._local is None else self._local.ids

    def _make_signer(self, embedded: bool) -> Signer | None:
        """The secret: the ``secret`` setting, else from the environment, else (embedded server) a fresh one."""
        if self.settings.secret is not None:
            return Signer.from_secret(self.settings.secret)
        return signer_from_environment() or (Signer.generate() if embedded else None)

    def _launch_local(self, n: int, daemon: str | None = None) -> LocalWorkers:
        """Start ``n`` worker processes in the background (one supervisor) on this param's server and job."""
        settings, address = self.settings, self.backend.address
        env = dict(settings.to_env(), REDISPARAM_URL=address.to_url(show_password=True))
        if self._signer is not None:
            env[SECRET_ENV] = self._signer.to_env()
        args = [
            "--quiet",  # their lifecycle messages would clutter the manager's output (a notebook's cells)
            "--heartbeat-interval",
            str(settings.heartbeat_interval),
            "--heartbeat-ttl",
            str(settings.heartbeat_ttl),
            *replica_flags(settings),
        ]
        if settings.resources:  # shared by all the local workers (one daemon; with ``daemon``, that one's)
            args += ["--resources", ",".join(f"{name}={amount!r}" for name, amount in settings.resources)]
            args += ["--daemon", daemon] if daemon else []
        return LocalWorkers(n, settings.jobname, env, uuid.uuid4().hex[:8], args)

    def _live_workers(self) -> int:
        """The live workers of the job (reaping dead ones); an error if this param's own local workers are gone
        and nobody else serves the job (else the run would wait for workers forever)."""
        count = count_and_reap(self.backend, self.settings.jobname, self._signer)
        local = self._local
        if count == 0 and local is not None and not local.is_running():
            raise WorkerError(
                f"the local workers of job {self.settings.jobname!r} exited (code {local.process.returncode}) and no "
                "other worker serves the job; see their log on this process's stderr"
            )
        return count

    def _wait_for_local_workers(self) -> None:
        local, backend = self._local, self.backend
        assert local is not None
        expected = set(local.ids)
        timeout = self.settings.start_timeout
        deadline = time.monotonic() + timeout
        while True:
            live = expected.intersection(backend.live_workers(self.settings.jobname))
            if len(live) == len(expected):
                return
            if not local.is_running():
                raise WorkerError(f"the local workers of job {self.settings.jobname!r} exited at start")
            if time.monotonic() > deadline:
                if live:
                    logger.warning("manager: only %d of %d local workers started", len(live), len(expected))
                    return
                raise WorkerError(f"no local worker of job {self.settings.jobname!r} started in {timeout:g} s")
            time.sleep(0.02)

    def _serve_foreground(self) -> None:
        settings = self.settings
        address = self.backend.address
        daemon = uuid.uuid4().hex[:8]  # this process and the extra ones share the resources
        extra = self._launch_local(settings.workers - 1, daemon) if settings.workers > 1 else None
        try:
            Worker(
                address,
                settings.jobname,
                heartbeat_interval=settings.heartbeat_interval,
                heartbeat_ttl=settings.heartbeat_ttl,
                signer=self._signer,
                replicas=settings.replicas,
                replicas_timeout=settings.replicas_timeout,
                replicas_required=settings.replicas_required,
                resources=settings.resources,
                daemon=daemon,
            ).run()
        finally:
            if extra is not None:
                extra.stop()
            self.stop()

    def stop(self) -> None:
        """Stop the local workers this param started, close the connection, stop an embedded server.

        A durable param (``durable=True``) only detaches: its server and workers go on (``dask-redisparam server
        stop`` stops them).
        """
        with self._lock:
            local, self._local = self._local, None
            backend, self._backend = self._backend, None
            server, self._server = self._server, None
            dashboard, self._dashboard = self._dashboard, None
            self._durable = None  # detach: the durable server and workers go on
        if dashboard is not None:
            dashboard.stop()
        if local is not None:
            local.stop()
        if backend is not None:
            backend.close()
        if server is not None:
            server.stop()

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def worker_ids(self) -> list[str]:
        """Ids of the live workers of this param's job (R's ``bpworkers`` of a started param)."""
        return self.backend.live_workers(self.settings.jobname)

    def alive(self) -> bool:
        """Whether the param's Redis server answers (R's ``rpalive``); never raises.

        An unstarted param with no server configured has none to ask: False.
        """
        return pool.alive(self.backend.address if self.is_up else self.settings.address)

    def stop_all(self, wait: float = 5.0) -> int:
        """Stop every worker listening on this param's jobname, and only that one (R's ``rpstopall``).

        Waits up to ``wait`` seconds for them to leave; returns how many workers were asked to stop.
        """
        if self.settings.is_worker:
            raise ConfigurationError("use stop_all() (rpstopall) from a manager, not from a worker")
        if self.is_up:
            return pool.stop_all(self.backend, self.settings.jobname, wait)
        if self.settings.address is None:
            return 0  # no server configured and none started: nobody to stop
        backend = Backend.connect(self.settings.address)
        try:
            return pool.stop_all(backend, self.settings.jobname, wait)
        finally:
            backend.close()

    @contextlib.contextmanager
    def _started(self) -> Iterator[None]:
        """Inside: the param is started (started here and stopped after, if it was not)."""
        durable = self._durable
        if durable is not None and not durable.touch():  # stopped since (idle, `server stop`): start it again
            logger.info("manager: the durable server in %s stopped; starting it again", durable.state_dir)
            self.stop()
            self.start()
        if self.is_up:
            yield
        else:
            with self:
                yield


def replica_flags(settings: Settings) -> list[str]:
    """The worker flags of the ``replicas`` settings (none when ``replicas`` is 0).

    Examples
    --------
    >>> replica_flags(Settings(jobname="job", environ={}, replicas=1, replicas_required=True))
    ['--replicas', '1', '--replicas-timeout', '1.0', '--replicas-required']
    """
    if settings.replicas == 0:
        return []
    flags = ["--replicas", str(settings.replicas), "--replicas-timeout", str(settings.replicas_timeout)]
    return flags + (["--replicas-required"] if settings.replicas_required else [])

"""``RedisParam``: the settings, the life cycle of a manager and its workers (R's bpstart / bpstop / bpisup),
and the running of graphs.

A :class:`RedisParam` is callable like a dask ``get``, so it is a scheduler::

    with RedisParam(workers=2) as p:          # start(): server (embedded if none is configured) + 2 workers
        dask.compute(x, scheduler=p)           # as many computes as you like on the started pool
                                               # stop(): workers and embedded server end

An unstarted param starts before one compute and stops after it. :func:`redis_get` uses a process-wide default
param, started on first use and kept until :func:`shutdown` or interpreter exit; importing the package registers it
with dask as the named scheduler ``"redisparam"`` (``dask.compute(x, scheduler="redisparam")``,
``dask.config.set(scheduler="redisparam")``).

``is_worker`` as in R: ``None`` (default) starts ``workers`` local worker processes with the manager; ``False``
is a manager only, served by whatever workers listen on ``jobname``; ``True`` makes :meth:`RedisParam.start`
serve tasks in the foreground until stopped.

This module holds the constructor (its signature and ``Parameters`` are generated from the settings table by
:mod:`dask_redisparam._docs.codegen`), the settings as attributes and the ``repr``; the life cycle is in
:mod:`dask_redisparam.param_lifecycle`, the running of graphs in :mod:`dask_redisparam.param_scheduling`, the values
kept in Redis (``persist``, datasets) in :mod:`dask_redisparam.param_data`, the bases of :class:`RedisParam`.
``redis_get.persist`` persists on the default param (dask calls it for ``dask.persist(..., scheduler=redis_get)``).
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import dask.base

from .config.settings import Settings, config_overrides
from .param_data import ParamData

__all__ = ["SCHEDULER_NAME", "RedisParam", "redis_get", "register_scheduler", "shutdown"]

_Init = TypeVar("_Init", bound=Callable[..., None])


def _dask_config_applied(init: _Init) -> _Init:
    """``init`` (an ``__init__`` that takes the settings) called with the settings that the caller did not give
    taken from the dask config keys ``redisparam.<name>``
    (:func:`~dask_redisparam.config.settings.config_overrides`)."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **config_overrides(kwargs, given_workers=bool(args)))

    return cast(_Init, wrapper)


class RedisParam(ParamData):
    """A dask scheduler that runs graphs through Redis, configured as R's ``RedisParam``.

    Its settings are also read-only attributes (``p.workers``) and :attr:`settings`. A setting not given takes the
    dask config key ``redisparam.<name>`` when that is set to something else than the default.

    Parameters
    ----------
    workers : int, optional
        Number of workers. Default: the local CPU count when ``is_worker`` is None, 1000 (a cap on the workers that may
        listen on the job) when False, 1 when True.
    jobname : str, optional
        Name shared by the manager and its workers; default a fresh unique id (``"durable"`` with ``durable=True``, so
        that a rerun finds the runs of the process before it).
    is_worker : bool, optional
        None: manager plus local workers; True: worker only; False: manager only.
    host : str, optional
        Host of the Redis server (alone: port 6379); see the module documentation for how the server settings combine
        with the environment.
    port : int or str, optional
        Port of the Redis server (alone: on host 127.0.0.1); see the module documentation for how the server settings
        combine with the environment.
    password : str, optional
        Password of the Redis server (``""``: none); see the module documentation for how the server settings combine
        with the environment.
    username : str, optional
        User name (Redis ACL) on the Redis server (``""``: the default user); see the module documentation for how the
        server settings combine with the environment.
    url : str, optional
        The Redis server as a URL (``redis://``, ``rediss://``, ``unix://``; a Redis Cluster's nodes as
        ``redis+cluster://h:p,h:p``; Sentinels as ``redis+sentinel://h:p,h:p/service``); see the module documentation
        for how the server settings combine with the environment.
    queue_multiplier : float, default 2.0
        Tasks queued per worker ahead of completion (> 0).
    stop_on_error : bool, default True
        Stop the run at the first failed task.
    timeout : float, optional
        Seconds allowed to each task.
    log : bool, default False
        Collect the workers' log records on the manager.
    threshold : str, default "INFO"
        One of TRACE, DEBUG, INFO, WARN, ERROR, FATAL (any case).
    logdir : str or os.PathLike[str], optional
        An existing writable directory for log files (needs ``log=True``).
    resultdir : str or os.PathLike[str], optional
        An existing writable directory for results.
    resultdir_all : bool, default False
        Save every task's value in ``resultdir``, not only the requested ones (as R's resultdir).
    progressbar : bool, default False
        Show a progress bar.
    rng_seed : int, optional
        Seed of the reproducible per-task random streams.
    tasks : int, optional
        None: one task per element; 0: one chunk per worker; n: n chunks.
    allowed_failures : int, default 3
        How often a task may be lost with its worker before the run fails.
    retries : int, default 0
        How often a task that raised is run again.
    heartbeat_interval : float, default 1.0
        Seconds between worker heartbeats (lease renewals).
    heartbeat_ttl : float, default 10.0
        Seconds after which a silent worker counts as lost (> ``heartbeat_interval``).
    redo_ttl : float, default 3600.0
        Seconds a failed run keeps its computed values in Redis for ``redo=`` (0: not kept).
    resume_ttl : float, default 3600.0
        Seconds the values of a run whose manager died (or was interrupted) stay in Redis, so that the same computation
        run again resumes from them (0: no resume; see the Durable runs page).
    start_timeout : float, default 60.0
        Seconds :meth:`~dask_redisparam.RedisParam.start` waits for its local workers to register (> 0); then it goes on
        with those that did, or fails if none did.
    dashboard : bool, default False
        Serve a live dashboard of the job (and its Prometheus ``/metrics``) on a free loopback port while the param is
        started: see ``dashboard_link``.
    durable : bool, default False
        With no server configured: run the embedded ``redis-server`` (with an append-only file) and its local workers
        detached in ``state_dir``, so that they outlive this process (a crashed notebook kernel) and the next process
        with the same ``state_dir`` reattaches to them; :meth:`~dask_redisparam.RedisParam.stop` then only detaches.
        They stop themselves after ``durable_idle`` seconds without work, or with ``dask-redisparam server stop``. See
        the *Durable local mode* in the docs.
    state_dir : str or os.PathLike[str], optional
        The private directory of the durable local mode (socket, append-only file, secret, logs); default
        ``$XDG_STATE_HOME/dask-redisparam``, else ``~/.local/state/dask-redisparam``. Created with mode ``0700``;
        refused if others may enter it or another user owns it.
    durable_idle : float, default 3600.0
        Seconds after which the durable server and its workers stop themselves when no run is alive, no worker is busy
        and the queue is empty (> 0); its append-only file stays for the next start.
    exportglobals : bool, default True
        Apply the manager's dask config (except its ``redisparam.*`` settings) on the workers while they unpickle and
        run its tasks.
    export_env : Sequence[str], default ()
        Names of environment variables whose manager values apply on the workers during its tasks.
    shared_filesystem : bool, default False
        Declare that every worker of the job sees one shared filesystem at dask's ``temporary_directory`` (default the
        system's temp directory), so that graphs with dask's disk-based shuffle may run on workers this param did not
        start. Otherwise such a graph fails at once with ``UnsafeShuffle``, unless only the param's own local workers
        serve the job.
    cluster : bool, default False
        Treat the server (``host``/``port`` or ``url``) as a seed node of a Redis Cluster, as a ``redis+cluster://`` URL
        does: each job lives in the slot of its ``{jobname}`` hash tag, so on one primary, and jobs spread over the
        cluster. See the *Beyond one Redis* page.
    replicas : int, default 0
        After each completion the workers wait (``WAIT``) until this many replicas acknowledged it, which bounds the
        writes that a failover may lose (0: no wait). See the *Beyond one Redis* page.
    replicas_timeout : float, default 1.0
        Seconds each ``WAIT`` of ``replicas`` may take (> 0); then the worker warns and goes on, or the task fails with
        ``replicas_required=True``.
    replicas_required : bool, default False
        Fail (rather than warn about) a completion that fewer than ``replicas`` replicas acknowledged in
        ``replicas_timeout``.
    resources : Mapping[str, float] or str, optional
        Resources of the local workers, shared by all of them (``{"GPU": 2}`` or ``"GPU=2,MEM=64e9"``), as ``dask-
        redisparam-worker --resources`` gives a daemon's: a task annotated with ``dask.annotate(resources=...)`` (or
        ``map``'s ``resources=``) runs only where they cover it, and at most as many at once as they allow. See the
        *Worker resources* section of the *Beyond one Redis* page.
    secret : str or bytes or Mapping[str, str | bytes], optional
        The shared secret that signs task messages, values and records (HMAC-SHA256); a mapping of key id to secret
        rotates keys (the first signs). Default: ``REDISPARAM_SECRET`` or ``REDISPARAM_SECRET_FILE``; with the embedded
        server, a fresh random secret for its private pool. Never read from a config file. Never shown: ``repr`` has
        ``secret='*****'`` when this setting or the environment (``REDISPARAM_SECRET`` / ``_FILE``) gives one, else
        ``secret=None``.
    tls_ca_file : str or os.PathLike[str], optional
        The certificate authorities (PEM file) that the server's TLS certificate must chain to; default the system's.
        Turns TLS on, as ``rediss://`` does.
    tls_cert_file : str or os.PathLike[str], optional
        A TLS client certificate (PEM file, given with ``tls_key_file``), for a server that requires client
        certificates. Turns TLS on, as ``rediss://`` does.
    tls_key_file : str or os.PathLike[str], optional
        The private key (PEM file) of ``tls_cert_file``. Turns TLS on, as ``rediss://`` does.
    environ : Mapping[str, str], optional
        The environment to read (default ``os.environ``); not stored.

    Examples
    --------
    >>> import dask
    >>> from operator import add
    >>> with RedisParam(workers=1) as p:
    ...     p({"x": 1, "y": (add, "x", 2)}, "y")
    3
    """

    @_dask_config_applied
    # BEGIN GENERATED: redisparam-signature
    def __init__(
        self,
        workers: int | None = None,
        *,
        jobname: str | None = None,
        is_worker: bool | None = None,
        host: str | None = None,
        port: int | str | None = None,
        password: str | None = None,
        username: str | None = None,
        url: str | None = None,
        queue_multiplier: float = 2.0,
        stop_on_error: bool = True,
        timeout: float | None = None,
        log: bool = False,
        threshold: str = "INFO",
        logdir: str | os.PathLike[str] | None = None,
        resultdir: str | os.PathLike[str] | None = None,
        resultdir_all: bool = False,
        progressbar: bool = False,
        rng_seed: int | None = None,
        tasks: int | None = None,
        allowed_failures: int = 3,
        retries: int = 0,
        heartbeat_interval: float = 1.0,
        heartbeat_ttl: float = 10.0,
        redo_ttl: float = 3600.0,
        resume_ttl: float = 3600.0,
        start_timeout: float = 60.0,
        dashboard: bool = False,
        durable: bool = False,
        state_dir: str | os.PathLike[str] | None = None,
        durable_idle: float = 3600.0,
        exportglobals: bool = True,
        export_env: Sequence[str] = (),
        shared_filesystem: bool = False,
        cluster: bool = False,
        replicas: int = 0,
        replicas_timeout: float = 1.0,
        replicas_required: bool = False,
        resources: Mapping[str, float] | str | None = None,
        secret: str | bytes | Mapping[str, str | bytes] | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # END GENERATED: redisparam-signature
        arguments = dict(locals())  # the settings and environ, as given or taken from the dask config
        del arguments["self"]
        ParamData.__init__(self, Settings(**arguments))  # not super(): its __class__ cell would be a local

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "settings":
            raise AttributeError(name)
        try:
            return getattr(self.settings, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __repr__(self) -> str:
        state = "up" if self.is_up else "down"
        fields = self.settings.describe(signed=self._signs())[len("Settings(") : -1]
        return f"RedisParam({fields}, state={state!r})"


_default: RedisParam | None = None
_default_lock = threading.Lock()


def default_param() -> RedisParam:
    """The process-wide param behind :func:`redis_get`, started on first use."""
    global _default
    with _default_lock:
        if _default is None or not _default.is_up:
            _default = RedisParam().start()
            # registered after the embedded server's own exit hook, so it runs first (atexit is LIFO)
            atexit.unregister(shutdown)
            atexit.register(shutdown)
        return _default


def redis_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """A dask ``get`` on the process-wide default :class:`RedisParam`; also dask's named scheduler
    ``"redisparam"`` (registered in ``dask.base.named_schedulers`` when the package is imported).

    Examples
    --------
    >>> import dask, dask.array as da
    >>> int(da.ones(10, chunks=5).sum().compute(scheduler=redis_get))
    10
    >>> with dask.config.set(scheduler="redisparam"):
    ...     int(da.ones(10, chunks=5).sum().compute())
    10
    """
    return default_param().get(dsk, keys, **kwargs)


SCHEDULER_NAME = "redisparam"
"""The name under which :func:`redis_get` is registered with dask (``scheduler="redisparam"``)."""


def register_scheduler() -> None:
    """Register :func:`redis_get` as dask's named scheduler :data:`SCHEDULER_NAME` (done at import); a scheduler
    already registered under that name by someone else stays, with a warning."""
    registered = dask.base.named_schedulers.setdefault(SCHEDULER_NAME, redis_get)
    if registered is not redis_get and getattr(registered, "__qualname__", "") != redis_get.__qualname__:
        warnings.warn(f"dask already has a scheduler named {SCHEDULER_NAME!r} ({registered!r}); it stays", stacklevel=2)


def _persist_on_default(collections: Sequence[Any], optimize_graph: bool = True, **kwargs: Any) -> list[Any]:
    """``redis_get.persist``: what ``dask.persist(..., scheduler=redis_get)`` calls (see
    :meth:`RedisParam.persist <dask_redisparam.param_data.ParamData.persist>`), on the default param."""
    return default_param().persist(collections, optimize_graph=optimize_graph, **kwargs)


redis_get.persist = _persist_on_default  # type: ignore[attr-defined]
register_scheduler()


def shutdown() -> None:
    """Stop the default param of :func:`redis_get` (its workers and embedded server)."""
    global _default
    with _default_lock:
        param, _default = _default, None
    if param is not None:
        param.stop()

"""``RedisParam``: settings plus the life cycle of a manager and its workers (R's bpstart / bpstop / bpisup).

A :class:`RedisParam` is callable like a dask ``get``, so it is a scheduler::

    with RedisParam(workers=2) as p:          # start(): server (embedded if none is configured) + 2 workers
        dask.compute(x, scheduler=p)           # as many computes as you like on the started pool
                                               # stop(): workers and embedded server end

An unstarted param starts before one compute and stops after it. :func:`redis_get` uses a process-wide default
param, started on first use and kept until :func:`shutdown` or interpreter exit.

``is_worker`` as in R: ``None`` (default) starts ``workers`` local worker processes with the manager; ``False``
is a manager only, served by whatever workers listen on ``jobname``; ``True`` makes :meth:`RedisParam.start`
serve tasks in the foreground until stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import dask.config
from dask.local import nested_get

from . import pool
from .backend import Backend
from .config.settings import Settings, config_overrides
from .errors import ConfigurationError, WorkerError
from .manager.graph import Graph, flatten_keys, prepare_graph
from .manager.loop import count_and_reap, fewer_collections, run_graph
from .manager.options import RedoInfo, RunOptions, TimelineRecord, redo_info_of
from .manager.shuffle import check_disk_shuffle, disk_shuffle_key, tasks_shuffle
from .manager.state import RunState
from .progress import ProgressCallback
from .resultdir import ResultDir
from .sentinels import MISSING
from .wire.signing import SECRET_ENV, SECRET_FILE_ENV, Signer, signer_from_environment
from .worker.loop import Worker
from .worker.server import EmbeddedRedis
from .worker.supervisor import LocalWorkers

__all__ = ["RedisParam", "redis_get", "shutdown"]

logger = logging.getLogger(__name__)

_Init = TypeVar("_Init", bound=Callable[..., None])


def _dask_config_applied(init: _Init) -> _Init:
    """``init`` (an ``__init__`` that takes the settings) called with the settings that the caller did not give
    taken from the dask config keys ``redisparam.<name>``
    (:func:`~dask_redisparam.config.settings.config_overrides`)."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **config_overrides(kwargs, given_workers=bool(args)))

    return cast(_Init, wrapper)


class RedisParam:
    """A dask scheduler that runs graphs through Redis, configured as R's ``RedisParam``.

    Its settings are also read-only attributes (``p.workers``) and :attr:`settings`. A setting not given takes the
    dask config key ``redisparam.<name>`` when that is set to something else than the default.

    Parameters
    ----------
    workers : int, optional
        Number of workers. Default: the local CPU count when ``is_worker`` is None, 1000 (a cap on the workers that may
        listen on the job) when False, 1 when True.
    jobname : str, optional
        Name shared by the manager and its workers; default a fresh unique id.
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
        The Redis server as a URL (``redis://``, ``rediss://``, ``unix://``); see the module documentation for how the
        server settings combine with the environment.
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
    start_timeout : float, default 60.0
        Seconds :meth:`~dask_redisparam.RedisParam.start` waits for its local workers to register (> 0); then it goes on
        with those that did, or fails if none did.
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
        progressbar: bool = False,
        rng_seed: int | None = None,
        tasks: int | None = None,
        allowed_failures: int = 3,
        retries: int = 0,
        heartbeat_interval: float = 1.0,
        heartbeat_ttl: float = 10.0,
        redo_ttl: float = 3600.0,
        start_timeout: float = 60.0,
        exportglobals: bool = True,
        export_env: Sequence[str] = (),
        shared_filesystem: bool = False,
        secret: str | bytes | Mapping[str, str | bytes] | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # END GENERATED: redisparam-signature
        arguments = dict(locals())  # the settings and environ, as given or taken from the dask config
        del arguments["self"]
        self.settings = Settings(**arguments)
        self._server: EmbeddedRedis | None = None
        self._backend: Backend | None = None
        self._local: LocalWorkers | None = None
        self._lock = threading.RLock()
        self._timeline: list[TimelineRecord] = []
        self._signer: Signer | None = None

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

    # ------------------------------------------------------------------ life cycle
    @property
    def is_up(self) -> bool:
        """Whether the param is started (R's ``bpisup``)."""
        return self._backend is not None

    @property
    def backend(self) -> Backend:
        """The connection of a started param."""
        if self._backend is None:
            raise ConfigurationError("the RedisParam is not started; call start() or use it in a with block")
        return self._backend

    def start(self) -> RedisParam:
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
                self._server = EmbeddedRedis().start()
                address = self._server.address
            self._signer = self._make_signer(embedded=self._server is not None)
            try:
                self._backend = Backend.connect(address)
                self._backend.check_job_access(settings.jobname)
                if settings.is_worker is None:
                    self._local = self._launch_local(settings.workers)
                    self._wait_for_local_workers()
            except BaseException:
                self.stop()
                raise
        if settings.is_worker:
            self._serve_foreground()
        return self

    def _make_signer(self, embedded: bool) -> Signer | None:
        """The secret: the ``secret`` setting, else from the environment, else (embedded server) a fresh one."""
        if self.settings.secret is not None:
            return Signer.from_secret(self.settings.secret)
        return signer_from_environment() or (Signer.generate() if embedded else None)

    def _launch_local(self, n: int) -> LocalWorkers:
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
        ]
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
        extra = self._launch_local(settings.workers - 1) if settings.workers > 1 else None
        try:
            Worker(
                address,
                settings.jobname,
                heartbeat_interval=settings.heartbeat_interval,
                heartbeat_ttl=settings.heartbeat_ttl,
                signer=self._signer,
            ).run()
        finally:
            if extra is not None:
                extra.stop()
            self.stop()

    def stop(self) -> None:
        """Stop the local workers this param started, close the connection, stop an embedded server."""
        with self._lock:
            local, self._local = self._local, None
            backend, self._backend = self._backend, None
            server, self._server = self._server, None
        if local is not None:
            local.stop()
        if backend is not None:
            backend.close()
        if server is not None:
            server.stop()

    def __enter__(self) -> RedisParam:
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

    # ------------------------------------------------------------------ scheduling
    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of ``dsk``: the dask ``get`` interface. Unknown keyword arguments are ignored."""
        return self.get(dsk, keys, **kwargs)

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Same as calling the param: run a graph and return the values of ``keys`` packed as dask expects.

        Keyword arguments of our own (dask passes on those given to ``compute``; others are ignored):

        - ``redo=err``: re-run only what failed or was not evaluated in the run that raised ``err`` (a
          :class:`~dask_redisparam.errors.TaskErrors` or a task's exception), reusing the values it kept;
        - ``return_exceptions=True``: exceptions in place of failed or unevaluated results (R's ``bptry``);
        - ``retries=n``: run a task that raised up to ``n`` more times;
        - ``fuse_chains=False``: send every task in a message of its own (no linear-chain fusion);
        - ``return_results=False`` (with a ``resultdir``): :class:`~dask_redisparam.resultdir.ResultRef` objects in
          place of the values, which stay on disk.
        """
        if self.settings.is_worker:
            raise ConfigurationError("a worker-mode RedisParam (is_worker=True) cannot run computations")
        redo = redo_info_of(kwargs.get("redo"), self.settings.jobname)
        saved = ResultDir(self.settings.resultdir) if self.settings.resultdir else None
        known = set(redo.fields) if redo is not None else set()
        if saved is not None:
            known |= {key for key in flatten_keys(keys) if saved.has(key)}
        with fewer_collections():
            graph = prepare_graph(dsk, keys, known=known)
            shuffle_key = disk_shuffle_key(graph)
            with self._started():
                if shuffle_key is not None:  # refused unless the pool shares one filesystem
                    local_ids = None if self._local is None else self._local.ids
                    check_disk_shuffle(shuffle_key, self.settings, local_ids, self.backend.live_workers)
                if saved is None:
                    return self._run(graph, keys, kwargs, redo)
                return self._run_saving(graph, keys, kwargs, redo, saved)

    @contextlib.contextmanager
    def as_default(self) -> Iterator[RedisParam]:
        """Inside: this param is dask's default scheduler, and dask shuffles with tasks unless told otherwise.

        Sets the dask config ``scheduler`` to this param and, if nobody set it, ``dataframe.shuffle.method`` to
        ``"tasks"``: dask's default, the disk-based shuffle, is right only on workers that share one filesystem
        (see :mod:`dask_redisparam.manager.shuffle`). dask.dataframe reads the method when a compute starts, dask.bag
        when ``groupby`` is called: build a bag's ``groupby`` inside the block. A param that is not started starts here
        and stops when the block ends. The config is process-wide while the block lasts, as ``dask.config.set``.

        Examples
        --------
        >>> import dask, dask.bag as db
        >>> with RedisParam(workers=1).as_default() as p:
        ...     dask.config.get("dataframe.shuffle.method"), dask.config.get("scheduler") is p
        ...     sorted(db.from_sequence(range(6), npartitions=2).groupby(lambda x: x % 2).compute())
        ('tasks', True)
        [(0, [0, 2, 4]), (1, [1, 3, 5])]
        """
        if self.settings.is_worker:
            raise ConfigurationError("a worker-mode RedisParam (is_worker=True) cannot be dask's scheduler")
        with self._started(), dask.config.set(tasks_shuffle(self)):
            yield self

    def _run_saving(
        self, graph: Graph, keys: Any, kwargs: dict[str, Any], redo: RedoInfo | None, saved: ResultDir
    ) -> Any:
        """A run with a result directory: each requested value is saved as soon as it is computed, and values saved
        by an earlier (interrupted or failed) run are not computed again."""
        return_results = kwargs.get("return_results", True)
        values: dict[Hashable, Any] = {}

        def keep(key: Hashable, value: Any) -> None:
            ref = saved.ref(key) if saved.has(key) else saved.save(key, value)
            values[key] = value if return_results else ref

        options = self._options(kwargs, redo, on_result=keep, load_known=saved.load)
        with ProgressCallback() if self.settings.progressbar else contextlib.nullcontext():
            run_graph(self.backend, graph, options, callbacks=kwargs.get("callbacks"), live_workers=self._live_workers)
        for key in graph.requested:
            if key not in values:
                values[key] = saved.load(key) if return_results else saved.ref(key)
        return nested_get(keys, values)  # type: ignore[no-untyped-call]

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Iterable[Any],
        tasks: int | None | object = MISSING,
        redo: Any = None,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """R's ``bplapply``/``bpmapply``: ``[func(*args, **kwargs) for args in zip(*iterables)]`` on the workers.

        Parameters
        ----------
        func : callable
            Applied to each element (to the i-th item of every iterable).
        *iterables
            The inputs; the shortest one sets the number of elements (as ``map``).
        tasks : int, optional
            None: one element per task (small tasks are still batched, and late workers get work); 0: one chunk
            per live worker; n: n chunks. Default: the param's ``tasks`` setting.
        redo : exception, optional
            The error a failed ``map`` raised: only its failed and unevaluated elements run again.
        return_exceptions : bool
            Exceptions in place of failed or unevaluated elements instead of raising.
        **kwargs
            Passed to ``func``.

        Examples
        --------
        >>> from operator import neg
        >>> with RedisParam(workers=1) as p:
        ...     p.map(neg, [1, 2, 3])
        [-1, -2, -3]
        """
        from .manager.mapping import map_elements

        with self._started():
            return map_elements(
                self,
                func,
                iterables,
                tasks=self.settings.tasks if tasks is MISSING else tasks,  # type: ignore[arg-type]
                kwargs=kwargs,
                redo=redo,
                return_exceptions=return_exceptions,
            )

    def iterate(
        self,
        iterator: Iterable[Any],
        func: Callable[..., Any],
        reduce: Callable[[Any, Any], Any] | None = None,
        init: Any = MISSING,
        in_order: bool = False,
        redo: Any = None,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Any:
        """R's ``bpiterate``: apply ``func`` to the items of an iterator of any length, consumed lazily.

        At most ``ceil(live workers × queue_multiplier)`` items are in flight. With ``reduce``, results are
        folded as they arrive (``in_order=False``) or in order, starting from ``init`` if given; errors are never
        folded (in order, folding stops at the first). Without ``reduce``, the results come back as a list in
        submission order. ``redo=err`` reads the iterator again from the start and runs only the items that
        failed or were not evaluated (and any beyond the earlier end).

        Examples
        --------
        >>> import operator
        >>> with RedisParam(workers=1) as p:
        ...     p.iterate(iter(range(5)), abs, reduce=operator.add)
        10
        """
        from .manager.mapping import iterate_elements

        with self._started():
            return iterate_elements(
                self,
                iterator,
                func,
                reduce=reduce,
                init=init,
                in_order=in_order,
                kwargs=kwargs,
                redo=redo,
                return_exceptions=return_exceptions,
            )

    def stream(self, dsk: Any, *, on_result: Callable[[Hashable, Any], None], feed: Callable[[RunState], bool]) -> None:
        """Run a graph that ``feed`` extends while it runs; ``on_result`` gets each requested value as it comes."""
        graph = prepare_graph(dsk, [])
        with self._started():
            options = self._options({}, None, on_result=on_result, feed=feed)
            run_graph(self.backend, graph, options, live_workers=self._live_workers)

    @contextlib.contextmanager
    def _started(self) -> Iterator[None]:
        """Inside: the param is started (started here and stopped after, if it was not)."""
        if self.is_up:
            yield
        else:
            with self:
                yield

    def _options(self, kwargs: dict[str, Any], redo: RedoInfo | None, **extra: Any) -> RunOptions:
        describe = self.backend.address.describe()
        options = RunOptions.from_settings(
            self.settings, kwargs, redo=redo, signer=self._signer, describe_server=describe, **extra
        )
        self._timeline = options.last_timeline
        return options

    def timeline(self) -> list[TimelineRecord]:
        """``(key, worker, start, end, ok)`` of every task of the last run of this param (workers' clocks).

        See :func:`dask_redisparam.timeline.plot_timeline` for a Gantt chart of it.
        """
        return list(self._timeline)

    def _run(self, graph: Any, keys: Any, kwargs: dict[str, Any], redo: RedoInfo | None) -> Any:
        options = self._options(kwargs, redo)
        with ProgressCallback() if self.settings.progressbar else contextlib.nullcontext():
            values: dict[Hashable, Any] = run_graph(
                self.backend, graph, options, callbacks=kwargs.get("callbacks"), live_workers=self._live_workers
            )
        return nested_get(keys, values)  # type: ignore[no-untyped-call]


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
    """A dask ``get`` on the process-wide default :class:`RedisParam`.

    Examples
    --------
    >>> import dask.array as da
    >>> int(da.ones(10, chunks=5).sum().compute(scheduler=redis_get))
    10
    """
    return default_param().get(dsk, keys, **kwargs)


def shutdown() -> None:
    """Stop the default param of :func:`redis_get` (its workers and embedded server)."""
    global _default
    with _default_lock:
        param, _default = _default, None
    if param is not None:
        param.stop()

"""The running of graphs on a :class:`~dask_redisparam.RedisParam`: the dask ``get`` interface, R's ``bplapply``
and ``bpiterate``, and the param as dask's default scheduler.

:class:`ParamScheduler` adds these to the life cycle (:class:`~dask_redisparam.param_lifecycle.ParamLifecycle`); a
param that is not started starts for one call and stops after it. Each run takes its options from the settings
(:meth:`RunOptions.from_settings <dask_redisparam.manager.options.RunOptions.from_settings>`) and goes to
:func:`~dask_redisparam.manager.run_graph`; with a ``resultdir``, each requested value (with ``resultdir_all``,
every task's) is saved as it comes, in a file named after its task's identity, and found again by it.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from typing import Any, TypeVar

import dask.config
from dask._task_spec import Alias, DataNode
from dask.local import nested_get

from .errors import ConfigurationError, IgnoredOptionWarning
from .executor import WAIT_SECONDS, RedisExecutor
from .manager.graph import Graph, flatten_keys, prepare_graph
from .manager.identity import Identities
from .manager.loop import fewer_collections, run_graph
from .manager.options import RedoInfo, RunOptions, TimelineRecord, ignored_options, redo_info_of
from .manager.resources import with_default
from .manager.resume import Resumer
from .manager.shuffle import check_disk_shuffle, disk_shuffle_key, tasks_shuffle
from .manager.state import RunState
from .param_lifecycle import ParamLifecycle
from .progress import ProgressCallback
from .resultdir import ResultDir
from .sentinels import MISSING

__all__ = ["ParamScheduler"]

_P = TypeVar("_P", bound="ParamScheduler")


def _caller_level() -> int:
    """The ``stacklevel`` of a warning raised in our caller's caller that points at the first frame outside dask
    and this package (the user's ``compute``)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None:
        name = frame.f_globals.get("__name__", "")
        if level > 1 and not (name.split(".")[0] in ("dask", "dask_redisparam") or name == "contextlib"):
            break
        frame, level = frame.f_back, level + 1
    return level


def _either(
    first: Callable[[Identities], Collection[Hashable]] | None,
    second: Callable[[Identities], Collection[Hashable]] | None,
) -> Callable[[Identities], list[Hashable]] | None:
    """One ``find`` for ``prepare_graph`` that asks both (the keys either knows), or None if neither is given."""
    finders = [f for f in (first, second) if f is not None]
    if not finders:
        return None

    def find(identities: Identities) -> list[Hashable]:
        return list(dict.fromkeys(key for f in finders for key in f(identities)))

    return find


def _is_literal(graph: Graph, key: Hashable) -> bool:
    return isinstance(graph.nodes[key], (DataNode, Alias))


class ParamScheduler(ParamLifecycle):
    """A param's life cycle plus the running of graphs on it: the base of :class:`~dask_redisparam.RedisParam`.

    Parameters
    ----------
    settings : Settings
        The validated settings.
    """

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of ``dsk``: the dask ``get`` interface (the keywords of :meth:`get`)."""
        return self.get(dsk, keys, **kwargs)

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Same as calling the param: run a graph and return the values of ``keys`` packed as dask expects.

        Keyword arguments of our own (dask passes on those given to ``compute``; any other one, and the annotations
        ``workers=`` and ``allow_other_workers=``, have no effect: an
        :class:`~dask_redisparam.errors.IgnoredOptionWarning` names them, once per compute):

        - ``redo=err``: re-run only what failed or was not evaluated in the run that raised ``err`` (a
          :class:`~dask_redisparam.errors.TaskErrors` or a task's exception), reusing the values it kept;
        - ``return_exceptions=True``: exceptions in place of failed or unevaluated results (R's ``bptry``);
        - ``retries=n``: run a task that raised up to ``n`` more times;
        - ``timeout=s``: the seconds each task may run, for this compute (overrides the ``timeout`` setting);
        - ``fuse_chains=False``: send every task in a message of its own (no linear-chain fusion);
        - ``resources={"GPU": 1}``: the resources every task without a ``dask.annotate(resources=...)`` of its own
          needs (it runs only on a worker whose daemon has them);
        - ``return_results=False`` (with a ``resultdir``): :class:`~dask_redisparam.resultdir.ResultRef` objects in
          place of the values, which stay on disk;
        - ``save_if=predicate`` (with a ``resultdir``): save only the values for which it is true (``map`` keeps
          chunks with failed elements out of the directory).
        """
        if self.settings.is_worker:
            raise ConfigurationError("a worker-mode RedisParam (is_worker=True) cannot run computations")
        redo = redo_info_of(kwargs.get("redo"), self.settings.jobname)
        saved = ResultDir(self.settings.resultdir) if self.settings.resultdir else None
        known = set(redo.fields) if redo is not None else set()
        find_saved = None if saved is None else self._find_saved(saved, flatten_keys(keys))
        with fewer_collections(), self._started():
            resumer = self._resumer()
            graph = prepare_graph(dsk, keys, known=known, find=_either(find_saved, resumer))
            if kwargs.get("resources") is not None:
                graph.annotations = with_default(graph.annotations, graph.nodes, kwargs["resources"])
            self._warn_ignored(kwargs, graph)
            if resumer is not None:
                resumer.report(sum(1 for k in graph.nodes if k not in graph.known and not _is_literal(graph, k)))
            shuffle_key = disk_shuffle_key(graph)
            if shuffle_key is not None:  # refused unless the pool shares one filesystem
                self._check_shuffle(shuffle_key)
            if saved is None:
                return self._run(graph, keys, kwargs, redo, resumer)
            return self._run_saving(graph, keys, kwargs, redo, saved, resumer)

    def _resumer(self) -> Resumer | None:
        """The lookup of dead runs' values (:mod:`dask_redisparam.manager.resume`), or None with resume off."""
        return Resumer(self.backend, self.settings.jobname) if self.settings.resume_ttl > 0 else None

    @staticmethod
    def _warn_ignored(kwargs: dict[str, Any], graph: Graph) -> None:
        """One :class:`~dask_redisparam.errors.IgnoredOptionWarning` naming what of this compute has no effect."""
        ignored = ignored_options(kwargs, graph.annotations)
        if ignored:
            warnings.warn(
                "dask-redisparam ignores " + "; ".join(ignored), IgnoredOptionWarning, stacklevel=_caller_level()
            )

    def _check_shuffle(self, shuffle_key: Hashable) -> None:
        """Refuse a graph with dask's disk-based shuffle unless the pool shares one filesystem."""
        check_disk_shuffle(shuffle_key, self.settings, self._local_ids, self.backend.live_workers)

    @contextlib.contextmanager
    def as_default(self: _P) -> Iterator[_P]:
        """Inside: this param is dask's default scheduler, and dask shuffles with tasks unless told otherwise.

        Sets the dask config ``scheduler`` to this param and, if nobody set it, ``dataframe.shuffle.method`` to
        ``"tasks"``: dask's default, the disk-based shuffle, is right only on workers that share one filesystem
        (see :mod:`dask_redisparam.manager.shuffle`). dask.dataframe reads the method when a compute starts, dask.bag
        when ``groupby`` is called: build a bag's ``groupby`` inside the block. A param that is not started starts here
        and stops when the block ends. The config is process-wide while the block lasts, as ``dask.config.set``.

        Examples
        --------
        >>> import dask, dask.bag as db
        >>> from dask_redisparam import RedisParam
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

    def _find_saved(self, saved: ResultDir, requested: list[Hashable]) -> Callable[[Identities], list[Hashable]]:
        """``prepare_graph``'s ``find`` for a result directory: the requested keys (with ``resultdir_all``: any
        key) saved there, looked up by identity (by key for a task without a stable identity)."""
        every = self.settings.resultdir_all

        def find(identities: Identities) -> list[Hashable]:
            wanted = [*identities.of, *identities.unstable] if every else requested
            return saved.present(wanted, identities.of)

        return find

    def _run_saving(
        self,
        graph: Graph,
        keys: Any,
        kwargs: dict[str, Any],
        redo: RedoInfo | None,
        saved: ResultDir,
        resumer: Resumer | None = None,
    ) -> Any:
        """A run with a result directory: each requested value (with ``resultdir_all``, every task's) is saved as
        soon as it is computed, named after its task's identity, and values saved by an earlier (interrupted or
        failed, or another process's) run are not computed again."""
        return_results = kwargs.get("return_results", True)
        save_if: Callable[[Any], bool] | None = kwargs.get("save_if")
        values: dict[Hashable, Any] = {}
        ids = graph.identities.of
        requested = set(graph.requested)

        def keep(key: Hashable, value: Any) -> None:
            identity = ids.get(key)
            if saved.has(key, identity):
                ref = saved.ref(key, identity)
            elif save_if is None or save_if(value):
                ref = saved.save(key, value, identity)
            else:
                ref = None
            if key in requested:
                values[key] = value if return_results or ref is None else ref

        def load(key: Hashable) -> Any:
            return saved.load(key, ids.get(key))

        stream_all = self.settings.resultdir_all
        options = self._options(kwargs, redo, on_result=keep, load_known=load, stream_all=stream_all, resumer=resumer)
        with ProgressCallback() if self.settings.progressbar else contextlib.nullcontext():
            rest = run_graph(
                self.backend, graph, options, callbacks=kwargs.get("callbacks"), live_workers=self._live_workers
            )
        for key in graph.requested:
            if key in values:
                continue
            if key in rest:  # not streamed: an exception in its place (return_exceptions)
                values[key] = rest[key]
            else:  # saved before this run
                values[key] = load(key) if return_results else saved.ref(key, ids.get(key))
        return nested_get(keys, values)  # type: ignore[no-untyped-call]

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Iterable[Any],
        tasks: int | None | object = MISSING,
        redo: Any = None,
        return_exceptions: bool = False,
        resources: Any = None,
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
        resources : mapping or str, optional
            What every chunk needs (``{"GPU": 1}``, as ``dask.annotate``'s): it runs only on a worker whose daemon
            has it, at most as many at once as the daemon's resources allow.
        **kwargs
            Passed to ``func``.

        Examples
        --------
        >>> from operator import neg
        >>> from dask_redisparam import RedisParam
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
                resources=resources,
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
        resources: Any = None,
        **kwargs: Any,
    ) -> Any:
        """R's ``bpiterate``: apply ``func`` to the items of an iterator of any length, consumed lazily.

        At most ``ceil(live workers × queue_multiplier)`` items are in flight. With ``reduce``, results are
        folded as they arrive (``in_order=False``) or in order, starting from ``init`` if given; errors are never
        folded (in order, folding stops at the first). Without ``reduce``, the results come back as a list in
        submission order. ``redo=err`` reads the iterator again from the start and runs only the items that
        failed or were not evaluated (and any beyond the earlier end). ``resources`` (``{"GPU": 1}``) is what
        every item's task needs, as :meth:`map`'s.

        Examples
        --------
        >>> import operator
        >>> from dask_redisparam import RedisParam
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
                resources=resources,
                saved=ResultDir(self.settings.resultdir) if self.settings.resultdir else None,
            )

    def stream(self, dsk: Any, *, on_result: Callable[[Hashable, Any], None], feed: Callable[[RunState], bool]) -> None:
        """Run a graph that ``feed`` extends while it runs; ``on_result`` gets each requested value as it comes."""
        graph = prepare_graph(dsk, [])
        with self._started():
            resumer = self._resumer()
            if resumer is not None:  # a feed matches the tasks it adds (Resumer.match)
                resumer.load()
            options = self._options({}, None, on_result=on_result, feed=feed, resumer=resumer)
            run_graph(self.backend, graph, options, live_workers=self._live_workers)

    def executor(self) -> RedisExecutor:
        """A :class:`concurrent.futures.Executor` on this param's workers whose values stay in Redis.

        Its futures are standard futures (``concurrent.futures.as_completed``, ``wait`` and ``asyncio.wrap_future``
        work); a future passed to ``submit`` is read by the worker from Redis; ``result()`` downloads once. A param
        that is not started starts here and stops when the executor shuts down. See
        :mod:`dask_redisparam.executor`.

        Examples
        --------
        >>> from dask_redisparam import RedisParam
        >>> with RedisParam(workers=1) as p, p.executor() as ex:
        ...     list(ex.map(abs, [-1, -2, 3]))
        [1, 2, 3]
        """
        if self.settings.is_worker:
            raise ConfigurationError("a worker-mode RedisParam (is_worker=True) cannot run an executor")
        started = not self.is_up
        if started:
            self.start()
        options = RunOptions.from_settings(
            self.settings,
            signer=self._signer,
            describe_server=self.backend.address.describe(),
            stop_on_error=False,  # a failed task is only its future's business
            redo_ttl=0.0,  # values expire with the run's lease when this process dies
            wait_seconds=WAIT_SECONDS,
        )
        return RedisExecutor(self, options, live_workers=self._live_workers, stop_param=started)

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

    def _run(
        self, graph: Any, keys: Any, kwargs: dict[str, Any], redo: RedoInfo | None, resumer: Resumer | None = None
    ) -> Any:
        options = self._options(kwargs, redo, resumer=resumer)
        with ProgressCallback() if self.settings.progressbar else contextlib.nullcontext():
            values: dict[Hashable, Any] = run_graph(
                self.backend, graph, options, callbacks=kwargs.get("callbacks"), live_workers=self._live_workers
            )
        return nested_get(keys, values)  # type: ignore[no-untyped-call]

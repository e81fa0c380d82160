"""A :class:`concurrent.futures.Executor` whose tasks run on the param's workers and whose values stay in Redis.

:meth:`RedisParam.executor() <dask_redisparam.RedisParam.executor>` returns a :class:`RedisExecutor`. It drives
one long-lived run (:func:`~dask_redisparam.manager.stream.run_stream`) from a thread of its own:
:meth:`~RedisExecutor.submit` adds a task to that run, and a :class:`RedisFuture` given as an argument (anywhere in
the arguments, also inside lists, tuples, sets and dicts) becomes a dependency: the worker reads its value from
Redis, the manager never downloads it. A future becomes done when its task finished, without its value:
:meth:`RedisFuture.result` downloads it once (and keeps it). The futures are :class:`concurrent.futures.Future`
objects, so the standard :func:`concurrent.futures.as_completed` and :func:`concurrent.futures.wait` and
:func:`asyncio.wrap_future` work with them.

Lifetimes: a value lives in Redis while its future is referenced in this process (a future that is garbage-collected
lets go of its value, which is deleted unless a pending task still reads it) and while this process lives (the run's
lease: the values of a process that died expire within
:data:`~dask_redisparam.manager.lease.RUN_TTL` seconds). :meth:`~RedisExecutor.shutdown` waits for the pending tasks,
downloads the values of the done futures still referenced and not read yet (so that their ``result()`` keeps
working), and deletes the run's keys.

The executor is also a dask ``get`` (dask takes any callable ``scheduler=`` as one before it looks for an
``Executor``): ``dask.compute(x, scheduler=p.executor())`` runs the graph as the param would, not task by task
through ``submit``.

Examples
--------
>>> from concurrent.futures import as_completed
>>> from operator import add
>>> from dask_redisparam import RedisParam
>>> with RedisParam(workers=1) as p, p.executor() as ex:
...     a = ex.submit(add, 1, 2)
...     b = ex.submit(add, a, 10)  # a's value stays in Redis: the worker reads it there
...     sorted(f.result() for f in as_completed([a, b]))
[3, 13]
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import uuid
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, cast

from dask._task_spec import Task, TaskRef, parse_input
from dask.utils import funcname

from .errors import ConfigurationError, ExecutorClosed, SerializationError
from .manager.loop import fetch_stored
from .manager.options import RunOptions
from .manager.resources import class_of
from .manager.state import RunState
from .manager.stream import fetch_value, run_stream
from .sentinels import MISSING
from .wire.serialize import dumps_task

if TYPE_CHECKING:
    from .param_data import ParamData
    from .param_scheduling import ParamScheduler

__all__ = ["IDLE_SECONDS", "WAIT_SECONDS", "RedisExecutor", "RedisFuture"]

logger = logging.getLogger(__name__)

WAIT_SECONDS = 0.05
"""How long a turn of the executor's run blocks for completion records while tasks are out: a task submitted then
leaves at the latest this much later."""
IDLE_SECONDS = 0.25
"""How long a turn of an idle executor's run waits for a submission (a submission wakes it at once)."""


class RedisFuture(concurrent.futures.Future[Any]):
    """The future of one task of a :class:`RedisExecutor`: done when the task finished, its value still in Redis.

    :meth:`result` downloads the value the first time (and keeps it), :meth:`exception` gives the task's exception
    (a :class:`~dask_redisparam.errors.RemoteError` of the original type where it can be imported here, which also
    :meth:`result` raises), :meth:`cancel` withdraws a task that has not started. ``running()`` stays False:
    the manager does not know when a worker starts a task.

    Attributes
    ----------
    key : str
        The task's key in the executor's run (the function's name and a random token).
    """

    def __init__(self, executor: RedisExecutor, key: str, dependencies: tuple[RedisFuture, ...]) -> None:
        super().__init__()
        self.key = key
        self._executor = executor
        self._dependencies = dependencies  # the futures whose values the task reads: held until it is done
        self._field: str | None = None
        self._value: Any = MISSING
        self._load = threading.Lock()

    def result(self, timeout: float | None = None) -> Any:
        """Wait up to ``timeout`` seconds for the task; return its value (downloaded once) or raise its exception.

        Raises
        ------
        concurrent.futures.TimeoutError, concurrent.futures.CancelledError
            As any future.
        Exception
            The task's exception (see the class docstring).
        """
        super().result(timeout)
        with self._load:
            if self._value is MISSING:
                self._value = self._executor._download(self)
            return self._value

    def cancel(self) -> bool:
        """Withdraw the task if it has not started: it waits on the manager (for its inputs or a free place in the
        window), or alone in a message that no worker has claimed yet; False once it runs (or shares its message
        with other tasks), is done, or is read by a pending task."""
        if self.done():
            return self.cancelled()
        if not self._executor._withdraw(self.key):
            return False
        return super().cancel()

    def _stored(self, field: str) -> None:
        self._field, self._dependencies = field, ()
        self.set_result(None)

    def _failed(self, error: BaseException) -> None:
        self._dependencies = ()
        self.set_exception(error)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled() else "done" if self.done() else "pending"
        return f"<RedisFuture {self.key!r} {state}>"


@dataclasses.dataclass
class _Submission:
    future: RedisFuture
    node: Task
    dependencies: tuple[str, ...]
    resources: Any = None


@dataclasses.dataclass
class _Cancel:
    key: str | None  # None: every pending task that can be withdrawn (shutdown(cancel_futures=True))
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    withdrawn: bool = False


class RedisExecutor(concurrent.futures.Executor):
    """Runs ``fn(*args, **kwargs)`` on the param's workers for :meth:`submit`; see the module docstring.

    Made by :meth:`RedisParam.executor() <dask_redisparam.RedisParam.executor>`.

    Parameters
    ----------
    param : RedisParam
        A started param: its workers run the tasks, its connection carries them.
    options : RunOptions
        The run's options (the executor sets ``feed`` and ``on_done``).
    live_workers : callable, optional
        Returns the number of live workers (the param's).
    stop_param : bool
        Stop the param when the executor's run ended (it was started for the executor).
    """

    def __init__(
        self,
        param: ParamScheduler,
        options: RunOptions,
        *,
        live_workers: Callable[[], int] | None = None,
        stop_param: bool = False,
    ) -> None:
        self._param = param
        self._stop_param = stop_param
        self._run_id = uuid.uuid4().hex[:12]
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._futures: weakref.WeakValueDictionary[str, RedisFuture] = weakref.WeakValueDictionary()
        self._closing = False
        self._error: BaseException | None = None
        self._run: RunState | None = None  # set by the run's thread at its first turn
        self._lock = threading.Lock()
        self._options = dataclasses.replace(options, feed=self._feed, on_done=self._on_done)
        self._thread = threading.Thread(
            target=self._serve, args=(live_workers,), name=f"redisparam-executor-{self._run_id}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ the Executor interface
    def submit(self, fn: Callable[..., Any], /, *args: Any, resources: Any = None, **kwargs: Any) -> RedisFuture:
        """Run ``fn(*args, **kwargs)`` on a worker; return its future at once.

        ``resources`` (``{"GPU": 1}``, as ``dask.annotate``'s; a keyword of ``submit``, never passed to ``fn``)
        runs it only on a worker whose daemon has them (see the *Worker resources* section of the docs).

        Futures of this executor anywhere in ``args`` and ``kwargs`` (inside lists, tuples, sets and dicts too) are
        replaced by their values on the worker, which reads them from Redis; the task waits for them, and fails with
        their error if one of them failed.

        Raises
        ------
        ExecutorClosed
            After :meth:`shutdown`, or when the executor's run ended on an error.
        SerializationError
            ``fn`` or an argument cannot be pickled.
        ConfigurationError
            An argument is a future of another executor.
        """
        if self._closing:
            raise ExecutorClosed("cannot submit to a RedisExecutor after its shutdown()") from self._error
        found: dict[str, RedisFuture] = {}
        key = f"{funcname(fn)}-{uuid.uuid4().hex}"
        class_of(key, resources)  # a malformed value raises here, naming the task
        node = Task(
            key,
            fn,
            *(self._resolve(arg, found) for arg in args),
            **{name: self._resolve(value, found) for name, value in kwargs.items()},
        )
        try:
            dumps_task(node)
        except Exception as e:
            raise SerializationError(f"cannot pickle task {key!r} (its function or arguments): {e}") from e
        future = RedisFuture(self, key, tuple(found.values()))
        with self._lock:  # the run's thread fails what is queued once it set _closing, under this lock
            if self._closing:
                raise ExecutorClosed("cannot submit to a RedisExecutor after its shutdown()") from self._error
            self._events.put(_Submission(future, node, tuple(found), resources))
        weakref.finalize(future, self._events.put, ("drop", key)).atexit = False
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the executor: no more submissions; the pending tasks still run (``cancel_futures``: those that have
        not left the manager are cancelled). The values of the done futures still referenced and not read yet are
        downloaded (their ``result()`` keeps working), then the run's keys are deleted. ``wait``: return when that
        is done."""
        with self._lock:
            self._closing = True
        if cancel_futures and self._thread.is_alive():
            self._events.put(_Cancel(None))
        self._events.put(("wake",))
        if wait and threading.current_thread() is not self._thread:  # a done callback cannot wait for its thread
            self._thread.join()

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of ``dsk`` as the param does: the dask ``get`` interface (``scheduler=executor``)."""
        return self._param.get(dsk, keys, **kwargs)

    get = __call__

    def persist(self, collections: list[Any], optimize_graph: bool = True, **kwargs: Any) -> list[Any]:
        """What ``dask.persist(..., scheduler=executor)`` calls: the param's ``persist`` (values stay in Redis)."""
        param = cast("ParamData", self._param)  # every RedisParam is one; the executor is made by RedisParam.executor()
        return param.persist(collections, optimize_graph=optimize_graph, **kwargs)

    # ------------------------------------------------------------------ the caller's side
    def _resolve(self, arg: Any, found: dict[str, RedisFuture]) -> Any:
        """``arg`` with the futures in it replaced by references to their keys (``found`` collects them)."""
        before = len(found)
        replaced = self._replace(arg, found)
        return parse_input(replaced) if len(found) > before or isinstance(arg, RedisFuture) else arg

    def _replace(self, arg: Any, found: dict[str, RedisFuture]) -> Any:
        if isinstance(arg, RedisFuture):
            if arg._executor is not self:
                raise ConfigurationError(
                    f"future {arg.key!r} belongs to another RedisExecutor: its value lives in another run; pass "
                    "its result() instead"
                )
            found[arg.key] = arg
            return TaskRef(arg.key)
        if isinstance(arg, (list, tuple, set, frozenset)):
            items = [self._replace(item, found) for item in arg]
            return type(arg)(items) if not hasattr(arg, "_fields") else type(arg)(*items)
        if isinstance(arg, dict):
            return {name: self._replace(value, found) for name, value in arg.items()}
        return arg

    def _withdraw(self, key: str) -> bool:
        """Ask the run to withdraw ``key``'s task; whether it did (answered by the run's thread)."""
        if threading.current_thread() is self._thread:  # a done callback that cancels another future
            return self._run is not None and self._cancel(self._run, key)
        if not self._thread.is_alive():
            return False
        request = _Cancel(key)
        self._events.put(request)
        while not request.done.wait(0.5):
            if not self._thread.is_alive():
                return False
        return request.withdrawn

    def _download(self, future: RedisFuture) -> Any:
        assert future._field is not None
        return fetch_value(self._param.backend, self._options, self._run_id, future.key, future._field)

    # ------------------------------------------------------------------ the run's thread
    def _serve(self, live_workers: Callable[[], int] | None) -> None:
        try:
            run_stream(self._param.backend, self._options, live_workers=live_workers, run_id=self._run_id)
        except BaseException as e:
            logger.error("manager: the run %s of a RedisExecutor ended: %s", self._run_id, e)
            self._error = e
        finally:
            with self._lock:
                self._closing = True
            error = ExecutorClosed(f"the run {self._run_id} of this RedisExecutor ended")
            error.__cause__ = self._error
            for future in list(self._futures.values()):
                if not future.done():
                    future._failed(error)
            self._fail_queued(error)
            if self._stop_param:
                self._param.stop()

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, _Submission):
                event.future._failed(error)
            elif isinstance(event, _Cancel):
                event.done.set()

    def _feed(self, run: RunState) -> bool:
        """Each turn: apply what the callers asked for (submissions, releases, cancels); False at the end."""
        self._run = run
        idle = not run.messages and not run.any_ready()
        try:
            wait = idle and not self._closing
            events = [self._events.get(timeout=IDLE_SECONDS) if wait else self._events.get_nowait()]
        except queue.Empty:
            events = []
        while events and len(events) < 10_000:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        for event in events:
            self._apply(run, event)
        if self._closing and run.pending == 0 and self._events.empty():
            self._keep_held(run)
            return False
        return True

    def _apply(self, run: RunState, event: Any) -> None:
        if isinstance(event, _Submission):
            future = event.future
            missing = [dep for dep in event.dependencies if dep not in run.graph.nodes]
            if missing:
                future._failed(concurrent.futures.CancelledError(f"task {future.key!r} needs cancelled {missing[0]!r}"))
                return
            self._futures[future.key] = future
            run.add_task(future.key, event.node, event.dependencies, resources=event.resources)
        elif isinstance(event, _Cancel):
            try:
                if event.key is not None:
                    event.withdrawn = self._cancel(run, event.key)
                else:
                    for future in list(self._futures.values()):
                        if not future.done() and self._cancel(run, future.key):
                            concurrent.futures.Future.cancel(future)
            finally:  # the caller waits for the answer (False if taking the message back failed)
                event.done.set()
        elif event[0] == "drop":
            run.drop(event[1])

    def _cancel(self, run: RunState, key: str) -> bool:
        """Withdraw ``key``'s task: on the manager, or alone in a message still queued in Redis (taken back)."""
        if run.cancel(key):
            return True
        queued = run.queued_message(key)
        if queued is None:
            return False
        msg_id, message = queued
        try:
            (withdrawn,) = self._param.backend.withdraw(run.job, [message], run.routes)
        except Exception as e:  # the task runs: cancel() says False
            logger.warning("manager: could not take back the message of %r from the queue: %s", key, e)
            return False
        if withdrawn:
            run.cancel_withdrawn(msg_id)
        return withdrawn

    def _on_done(self, run: RunState) -> None:
        for key in run.take_new_results():
            future = self._futures.get(str(key))
            if future is not None:
                future._stored(str(run.loc[key]))
        for key, error in run.take_new_errors():
            future = self._futures.get(str(key))
            if future is not None:
                future._failed(error)
            else:  # its future is gone (a pending task dropped): nobody will read the error
                run.drop(key)

    def _keep_held(self, run: RunState) -> None:
        """Before the run's keys go: download the values of the done futures still referenced and not read."""
        unread = [f for f in list(self._futures.values()) if f._field is not None and f._value is MISSING]
        values: dict[Hashable, Any] = {}
        if unread:
            fields: dict[Hashable, str] = {f.key: f._field for f in unread if f._field is not None}
            fetch_stored(
                self._param.backend,
                self._options.jobname,
                run.run_id,
                fields,
                self._options.signer,
                values,
                self._options.describe_server,
            )
        for future in unread:
            with future._load:
                if future._value is MISSING:
                    future._value = values[future.key]

"""Every exception that dask-redisparam raises on purpose.

All of them derive from :class:`RedisParamError`, so ``except RedisParamError`` catches any failure of the
package itself. Exceptions raised *by a task* on a worker are re-raised on the manager with their original
type; the re-raised instance is also an instance of :class:`RemoteError`, so both ``except ZeroDivisionError``
and ``except RemoteError`` work::

    RedisParamError
    ├── ConfigurationError         (also ValueError)    a setting is invalid; names the setting
    │   └── UnsafeShuffle                                 a disk shuffle on workers that may not share a disk
    ├── ServerError                                      a Redis server cannot be used
    │   ├── ServerUnavailable      (also ConnectionError) cannot connect; names host:port
    │   │   └── ServerLoading                             the server is loading its dataset (waited through)
    │   ├── AuthenticationFailed                          wrong or missing password / ACL user
    │   │   └── PermissionDenied                          the ACL denies a command or key the job needs
    │   ├── ServerOutOfMemory                             OOM: the server's memory is full (maxmemory)
    │   ├── ServerReadOnly                                READONLY: the server is a replica
    │   ├── PersistenceFailed                             MISCONF: writes refused after a failed RDB save
    │   ├── ReplicationFailed                             too few replicas acknowledged (replicas_required)
    │   └── RunLost                                       the run's state vanished from Redis
    │       └── HeldValuesLost                            persisted or published values are gone from Redis
    ├── SerializationError         (also TypeError)     a task, argument or result cannot be pickled
    ├── PayloadRejected                                  a signature is missing or wrong: nothing was unpickled
    ├── KilledWorker               (PartialResults)     a task's workers died too often while running it
    ├── TaskTimeout                (also TimeoutError)  a task ran longer than the timeout
    ├── TaskErrors                 (PartialResults)     stop_on_error=False: some tasks failed (partial results)
    ├── Unevaluated                                      stands in for a result that was never computed
    ├── ChunkFailed                                      internal: a map chunk stopped at a failed element
    ├── StreamStopped                                    internal: a streaming consumer ends its run early, on purpose
    ├── Unstable                                         internal: a value has no stable encoding (task identity)
    ├── WorkerError                                      a worker cannot start or serve
    │   └── WorkerConflict                                another live worker has the same id
    ├── MessagesRejected                                 every worker refused the run's messages (secret, version)
    ├── DatasetNotFound            (also KeyError)      no dataset of that name is published on the job
    ├── DatasetExists              (also ValueError)    a dataset of that name is published already
    ├── ExecutorClosed             (also RuntimeError)  submit after shutdown, or the executor's run ended
    └── RemoteError                (PartialResults)     mixin of every exception raised by a task
        └── StandInError                                 a task's exception the manager cannot rebuild as itself

    PartialResults                 (a mixin, not an exception) the results, errors and redo of a stopped run
    StopRequested                  (BaseException)      control flow: a worker was asked to stop
    IgnoredOptionWarning           (UserWarning)        a compute's annotation or keyword that has no effect here
    PersistedDownloadWarning       (a UserWarning)      persisted values computed by another scheduler: downloaded

Examples
--------
>>> from dask_redisparam.errors import ConfigurationError, RedisParamError
>>> issubclass(ConfigurationError, ValueError) and issubclass(ConfigurationError, RedisParamError)
True
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = [
    "AuthenticationFailed",
    "ChunkFailed",
    "StreamStopped",
    "Unstable",
    "ConfigurationError",
    "IgnoredOptionWarning",
    "DatasetExists",
    "DatasetNotFound",
    "HeldValuesLost",
    "ExecutorClosed",
    "KilledWorker",
    "MessagesRejected",
    "PartialResults",
    "PayloadRejected",
    "PermissionDenied",
    "PersistedDownloadWarning",
    "PersistenceFailed",
    "RedisParamError",
    "RemoteError",
    "ReplicationFailed",
    "RunLost",
    "SerializationError",
    "ServerError",
    "ServerLoading",
    "ServerOutOfMemory",
    "ServerReadOnly",
    "ServerUnavailable",
    "StandInError",
    "StopRequested",
    "TaskErrors",
    "TaskTimeout",
    "Unevaluated",
    "UnsafeShuffle",
    "WorkerConflict",
    "WorkerError",
    "raise_partial",
]


class RedisParamError(Exception):
    """Base class of every error raised by dask-redisparam itself."""


class PartialResults:
    """What the errors of a run carry: the results that were computed before it stopped, and the way to redo.

    Attributes
    ----------
    results : dict
        Requested key -> value, for the requested keys that were computed.
    errors : dict
        Task key -> exception, for every task that failed.
    unevaluated : list
        Requested keys that were not computed.
    redo : object or None
        Pass the exception as ``redo=`` to re-run only what failed or was not evaluated.
    reduced : object
        ``iterate`` with ``reduce``: what was folded before the run stopped.
    """

    reduced: Any = None
    results: dict[Any, Any] | None = None
    errors: dict[Any, BaseException] | None = None
    unevaluated: list[Any] | None = None
    redo: Any = None


class ConfigurationError(RedisParamError, ValueError):
    """A setting (constructor argument, environment variable or dask config key) is invalid."""


class UnsafeShuffle(ConfigurationError):
    """A graph shuffles on disk (dask's partd shuffle) on workers not known to share one filesystem.

    Each worker would see only the pieces written on its own machine, and rows would be lost without an error.
    Nothing of the graph ran. Use ``dataframe.shuffle.method="tasks"`` (``RedisParam.as_default()``), or declare
    ``shared_filesystem=True``.
    """


class ServerError(RedisParamError):
    """The Redis server cannot be used for this run."""


class ServerUnavailable(ServerError, ConnectionError):
    """No connection to the Redis server could be made; the message names ``host:port`` or the socket."""


class AuthenticationFailed(ServerError):
    """The Redis server refused the password or the ACL user."""


class ServerLoading(ServerUnavailable):
    """The server answers ``LOADING``: it is reading its dataset into memory (after a restart, or a replica
    syncing). Managers and workers wait for it as for a lost connection, and raise this only if it lasts."""


class PermissionDenied(AuthenticationFailed):
    """The server's ACL denies the user a command or a key that the job needs (``NOPERM``); the message names
    the server, the user and what to allow."""


class ServerOutOfMemory(ServerError):
    """The server refused a write because its memory is full (``OOM``: ``maxmemory`` reached, with a policy such
    as ``noeviction`` that evicts nothing). A run that fails so keeps nothing for ``redo=``."""


class ServerReadOnly(ServerError):
    """The server is a read-only replica (``READONLY``): connect to its primary."""


class PersistenceFailed(ServerError):
    """The server refuses writes because its last RDB snapshot failed (``MISCONF``, with
    ``stop-writes-on-bgsave-error yes``)."""


class RunLost(ServerError):
    """The run's state vanished from Redis, e.g. a restart of a server without persistence."""


class ReplicationFailed(ServerError):
    """Fewer replicas than ``replicas`` acknowledged a task's completion within ``replicas_timeout``, with
    ``replicas_required=True``: a failover then could lose it."""


class HeldValuesLost(RunLost):
    """Values that a persist or a publish kept in Redis are gone: released (the collection was garbage collected),
    their holder's lease expired, the dataset unpublished, or the server restarted without persistence."""


class DatasetNotFound(RedisParamError, KeyError):
    """No dataset of that name is published on the job."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetExists(RedisParamError, ValueError):
    """A dataset of that name is published on the job already (unpublish it first)."""


class PersistedDownloadWarning(UserWarning):
    """Persisted values were computed with a scheduler other than their param: each one is downloaded into the
    process that computes them (the loader connects to Redis itself)."""


class SerializationError(RedisParamError, TypeError):
    """A task's function, its arguments or its result cannot be pickled; the message names the task key."""


class PayloadRejected(RedisParamError):
    """A payload's signature is missing, unknown or wrong: it was not unpickled (:mod:`dask_redisparam.wire.signing`).

    ``reason`` classifies it: ``"unsigned"``, ``"no-secret"`` (signed, but this process has no secret),
    ``"unknown-key"``, ``"bad-signature"`` or ``"rejected"`` (anything else).
    """

    def __init__(self, message: str, reason: str = "rejected") -> None:
        super().__init__(message)
        self.reason = reason


class KilledWorker(RedisParamError, PartialResults):
    """A task was running on more than ``allowed_failures`` workers that died (as dask.distributed's).

    Attributes
    ----------
    key : object
        The task.
    attempts : int
        How many times it was started.
    last_worker : str
        The id of the last worker that died running it.
    """

    def __init__(self, key: Any, attempts: int, last_worker: str, allowed_failures: int) -> None:
        super().__init__(
            f"task {key!r} was lost with {attempts} worker(s) that died while running it (last: {last_worker}); "
            f"allowed_failures={allowed_failures}. Look at that worker's log: did the task crash the process "
            "(os._exit, a segfault, running out of memory) or did the machine go away?"
        )
        self.key, self.attempts, self.last_worker = key, attempts, last_worker
        self.allowed_failures = allowed_failures

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.attempts, self.last_worker, self.allowed_failures))


class TaskTimeout(RedisParamError, TimeoutError):
    """A task ran longer than the ``timeout`` setting; it is not retried.

    Attributes
    ----------
    key : object
        The task (None when not known where it was detected).
    seconds : float
        The limit.
    """

    def __init__(self, key: Any, seconds: float) -> None:
        what = "a task" if key is None else f"task {key!r}"
        super().__init__(f"{what} ran longer than timeout={seconds:g} s and was stopped")
        self.key, self.seconds = key, seconds

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.seconds))


class TaskErrors(RedisParamError, PartialResults):
    """Some tasks failed (with ``stop_on_error=False``, every task that could run did); BiocParallel's
    ``bplist_error``.

    Attributes
    ----------
    errors : dict
        Task key -> the exception it raised (original type, also a :class:`RemoteError`).
    results : dict
        Requested key -> value, for what completed.
    unevaluated : list
        Requested keys that were not computed (they depend on failed tasks).
    redo : object or None
        What ``redo=`` needs to re-run only the failed and unevaluated tasks.
    """

    errors: dict[Any, BaseException]
    results: dict[Any, Any]
    unevaluated: list[Any]

    def __init__(
        self, errors: dict[Any, BaseException], results: dict[Any, Any], unevaluated: list[Any], redo: Any = None
    ) -> None:
        shown = ", ".join(repr(k) for k in list(errors)[:6]) + (", ..." if len(errors) > 6 else "")
        first = next(iter(errors.values()), None)
        first_text = f"{type(first).__name__}: {first}" if first is not None else "none"
        super().__init__(
            f"{len(errors)} remote error(s), keys: {shown}; {len(unevaluated)} unevaluated "
            f"(they depend on failed tasks); first remote error:\n{first_text}"
        )
        self.errors, self.results, self.unevaluated, self.redo = errors, results, unevaluated, redo

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.results, self.unevaluated, self.redo))


def raise_partial(
    errors: dict[Any, BaseException],
    results: dict[Any, Any],
    unevaluated: list[Any],
    redo: Any,
    first: BaseException | None = None,
) -> NoReturn:
    """Raise for a run in which tasks failed, with its partial results: ``first`` itself (with ``stop_on_error``,
    the error that stopped the run) when it can carry them (a :class:`PartialResults`), else :class:`TaskErrors`.

    Examples
    --------
    >>> try:
    ...     raise_partial({"x": ZeroDivisionError("1/0")}, {"y": 1}, [], None)
    ... except TaskErrors as e:
    ...     e.results, list(e.errors)
    ({'y': 1}, ['x'])
    """
    if isinstance(first, PartialResults):
        first.results, first.errors, first.unevaluated, first.redo = results, errors, unevaluated, redo
        raise first
    raise TaskErrors(errors, results, unevaluated, redo)


class Unevaluated(RedisParamError):
    """Stands in for the result of a task that was not computed because a task it depends on failed, or the run
    stopped first (BiocParallel's ``unevaluated_error``)."""

    def __init__(self, key: Any) -> None:
        super().__init__(f"task {key!r} was not evaluated (a task it depends on failed, or the run stopped)")
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key,))


class StreamStopped(RedisParamError):
    """Raised by a streaming consumer (``on_result``) to end its run early, on purpose: the run ends as a finished
    one (everything of it deleted), not as an interrupted one kept for resume."""


class Unstable(RedisParamError):
    """A value has no stable encoding, so its task has no identity (:mod:`dask_redisparam.manager.identity`); the
    message says why."""


class ChunkFailed(RedisParamError):
    """Raised by a chunk of ``map`` or ``iterate`` in which an element failed, with ``stop_on_error``: it stops the
    run and carries the per-element outcomes of the chunk (the manager turns them into the element's own error)."""

    def __init__(self, outcomes: list[tuple[Any, ...]]) -> None:
        super().__init__(f"an element of a chunk of {len(outcomes)} failed")
        self.outcomes = outcomes

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.outcomes,))


class WorkerError(RedisParamError):
    """A worker could not start, register or serve."""


class WorkerConflict(WorkerError):
    """A live worker with the same id already serves the same jobname."""


class MessagesRejected(RedisParamError):
    """Every live worker of the job refused the run's task messages (dead-lettered, never unpickled) and none was
    accepted for a few seconds: the workers lack the manager's secret, have another one, or run another version.
    The message names the reasons and the workers, and what to set."""


class ExecutorClosed(RedisParamError, RuntimeError):
    """A :class:`~dask_redisparam.executor.RedisExecutor` was shut down (``submit`` after ``shutdown``), or its run
    ended on an error, which is the ``__cause__``; the futures that were pending fail with it."""


class RemoteError(RedisParamError, PartialResults):
    """Mixin class of every exception that a task raised on a worker.

    Attributes
    ----------
    key : object
        The dask key of the task that raised.
    worker : str
        The id of the worker that ran it.
    remote_traceback : str
        The traceback as formatted on the worker.
    """

    key: Any = None
    worker: str = ""
    remote_traceback: str = ""


class StandInError(RemoteError):
    """Stands in for an exception raised by a task that cannot be rebuilt on the manager as itself: it cannot be
    pickled, its pickle does not unpickle (e.g. an ``__init__`` with required arguments that ``args`` does not
    hold), or its class is importable on the workers only.

    Attributes
    ----------
    type_name : str
        The qualified name of the original exception's class, e.g. ``"mypkg.errors.QuotaError"``.
    message : str
        ``str()`` of the original exception.
    reason : str
        Why it could not be carried as itself.

    Like every :class:`RemoteError`, it also carries ``key``, ``worker`` and ``remote_traceback`` (the original
    traceback, as formatted on the worker).

    Examples
    --------
    >>> err = StandInError("mypkg.QuotaError", "over quota", "its module cannot be imported here")
    >>> str(err).split(" [")[0], isinstance(err, RemoteError)
    ('mypkg.QuotaError: over quota', True)
    """

    def __init__(self, type_name: str, message: str, reason: str) -> None:
        super().__init__(
            f"{type_name}: {message} [a stand-in: the task's exception cannot be rebuilt on the manager ({reason}); "
            f"make {type_name} picklable and importable on the manager to get the exception itself]"
        )
        self.type_name, self.message, self.reason = type_name, message, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.reason), self.__dict__)


class StopRequested(BaseException):
    """Raised inside a worker when it is asked to stop.

    It derives from ``BaseException`` on purpose, as rq's ``ShutDownImminentException``: task code that catches
    ``Exception`` must not swallow a shutdown.
    """


class IgnoredOptionWarning(UserWarning):
    """A compute asked for something that dask-redisparam does not do: an annotation (``resources=``,
    ``workers=``, ``allow_other_workers=``) or a keyword of ``compute`` (``num_workers=``, or one it does not know),
    warned once per compute, naming each one and why it has no effect.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", IgnoredOptionWarning)  # silence them all
    """

"""dask-redisparam: run any dask graph through Redis, after Bioconductor's RedisParam."""

from __future__ import annotations

from .config.address import RedisAddress
from .config.settings import Settings
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    DatasetExists,
    DatasetNotFound,
    ExecutorClosed,
    HeldValuesLost,
    IgnoredOptionWarning,
    KilledWorker,
    MessagesRejected,
    PartialResults,
    PermissionDenied,
    PersistedDownloadWarning,
    PersistenceFailed,
    RedisParamError,
    RemoteError,
    ReplicationFailed,
    RunLost,
    SerializationError,
    ServerError,
    ServerLoading,
    ServerOutOfMemory,
    ServerReadOnly,
    ServerUnavailable,
    StandInError,
    TaskErrors,
    TaskTimeout,
    Unevaluated,
    UnsafeShuffle,
    WorkerConflict,
    WorkerError,
)
from .executor import RedisExecutor, RedisFuture
from .logs import REMOTE_LOGGER, TaskLog
from .param import RedisParam, redis_get, shutdown
from .r_compat import bpstopall, rpalive, rphost, rpisworker, rppassword, rpport, rpstopall, rpworkers
from .resultdir import ResultDir, ResultRef
from .results import is_ok, try_compute
from .rng import task_rng
from .timeline import plot_timeline
from .worker.server import EmbeddedRedis

__version__ = "0.1.0"

__all__ = [
    "EmbeddedRedis",
    "REMOTE_LOGGER",
    "RedisAddress",
    "RedisExecutor",
    "RedisFuture",
    "RedisParam",
    "ResultDir",
    "ResultRef",
    "Settings",
    "TaskLog",
    "plot_timeline",
    "bpstopall",
    "is_ok",
    "task_rng",
    "try_compute",
    "redis_get",
    "rpalive",
    "rphost",
    "rpisworker",
    "rppassword",
    "rpport",
    "rpstopall",
    "rpworkers",
    "shutdown",
    "AuthenticationFailed",
    "ConfigurationError",
    "IgnoredOptionWarning",
    "DatasetExists",
    "DatasetNotFound",
    "HeldValuesLost",
    "PersistedDownloadWarning",
    "ExecutorClosed",
    "KilledWorker",
    "MessagesRejected",
    "PartialResults",
    "PermissionDenied",
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
    "TaskErrors",
    "TaskTimeout",
    "Unevaluated",
    "UnsafeShuffle",
    "WorkerConflict",
    "WorkerError",
]

from .config.defaults import register_dask_defaults as _register_dask_defaults

_register_dask_defaults()  # the redisparam.* dask config keys, from the packaged redisparam.yaml

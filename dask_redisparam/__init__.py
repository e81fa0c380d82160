"""dask-redisparam: run any dask graph through Redis, after Bioconductor's RedisParam."""

from __future__ import annotations

from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    KilledWorker,
    RedisParamError,
    RemoteError,
    RunLost,
    SerializationError,
    ServerError,
    ServerUnavailable,
    TaskTimeout,
    WorkerConflict,
    WorkerError,
)
from .param import RedisParam, redis_get, shutdown
from .pool import bpstopall, rpalive, rphost, rpisworker, rppassword, rpport, rpstopall, rpworkers
from .server import EmbeddedRedis

__version__ = "0.1.0"

__all__ = [
    "EmbeddedRedis",
    "RedisParam",
    "bpstopall",
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
    "KilledWorker",
    "RedisParamError",
    "RemoteError",
    "RunLost",
    "SerializationError",
    "ServerError",
    "ServerUnavailable",
    "TaskTimeout",
    "WorkerConflict",
    "WorkerError",
]

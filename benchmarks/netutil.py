"""Small helpers the network studies share: a redis-py client for an address, Redis's own CPU time, medians.

Examples
--------
>>> median_or_none([3.0, 1.0, 2.0]), median_or_none([])
(2.0, None)
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["median_or_none", "redis_client", "redis_cpu_seconds"]


def redis_client(address: Any) -> Any:
    """A redis-py client for a :class:`~dask_redisparam.config.address.RedisAddress` (Unix socket or TCP)."""
    import redis

    if address.path:
        return redis.Redis(unix_socket_path=address.path, password=address.password, username=address.username)
    return redis.Redis(host=address.host, port=address.port, password=address.password, username=address.username)


def redis_cpu_seconds(client: Any) -> float:
    """The server's own CPU time so far (``INFO cpu``: ``used_cpu_sys`` + ``used_cpu_user``, main thread and
    I/O threads together), in seconds."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None

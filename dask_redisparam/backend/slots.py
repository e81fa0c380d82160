"""Which slot of a Redis Cluster a backend operation works on: the slot of a key, a job or a ``SCAN`` pattern, and
:func:`routing`, which wraps every public method of the backend so that, on a cluster, its thread works on the
slot that the method's first argument names (:data:`ROUTES`); :mod:`.cluster` then sends it to that slot's primary.

Examples
--------
>>> slot_of_job("demo") == slot_of_key("drp:{demo}:queue")
True
>>> print(slot_of_pattern("drp:{*}:*"))
None
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from redis.crc import key_slot

__all__ = ["ROUTES", "routing", "slot_of_job", "slot_of_key", "slot_of_pattern"]

_F = TypeVar("_F", bound=Callable[..., Any])


def slot_of_key(key: str | bytes) -> int:
    """The cluster slot of a key (its hash tag's, if it has one)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def slot_of_job(jobname: str) -> int:
    """The slot of every key of job ``jobname`` (the tag ``{jobname}``)."""
    return slot_of_key(f"{{{jobname}}}")


def slot_of_pattern(pattern: str) -> int | None:
    """The slot of every key a ``SCAN MATCH`` pattern can match, or None when its hash tag is a glob (or missing)."""
    start = pattern.find("{")
    end = pattern.find("}", start + 1)
    if start < 0 or end < 0 or any(c in pattern[start + 1 : end] for c in "*?[]\\") or end == start + 1:
        return None
    return slot_of_key(pattern)


def _by_job(value: Any) -> int | None:
    return slot_of_job(value) if isinstance(value, str) else None


def _by_key(value: Any) -> int | None:
    return slot_of_key(value) if isinstance(value, (str, bytes)) else None


def _by_pattern(value: Any) -> int | None:
    return slot_of_pattern(value) if isinstance(value, str) else None


def _by_first_key(value: Any) -> int | None:
    return _by_key(value[0]) if isinstance(value, (list, tuple)) and value else None


def _by_report(value: Any) -> int | None:
    return _by_job(value[0]) if isinstance(value, tuple) and value else None


ROUTES: dict[str, Callable[[Any], int | None]] = {
    "jobname": _by_job,
    "key": _by_key,
    "data": _by_key,
    "pattern": _by_pattern,
    "held": _by_first_key,
    "report": _by_report,
}
"""The first parameter of a backend method, by name -> how to find the slot it works on from its value."""


def routing(method: _F) -> _F:
    """Wrap a backend method so that, on a cluster, it works on the slot its first argument names (:data:`ROUTES`);
    other methods are returned unchanged."""
    params = list(inspect.signature(method).parameters)[1:2]
    if not params or params[0] not in ROUTES:
        return method
    name, pick = params[0], ROUTES[params[0]]

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        cluster = self._cluster  # a ClusterMap, or None
        if cluster is None:
            return method(self, *args, **kwargs)
        previous = cluster.enter(pick(args[0] if args else kwargs.get(name)))
        try:
            return method(self, *args, **kwargs)
        finally:
            cluster.leave(previous)

    return cast(_F, call)

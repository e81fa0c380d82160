"""Redis's error replies, named: what redis-py raises becomes the package's exception at the backend's boundary.

Every public method of :class:`~dask_redisparam.backend.Backend` (pipelines, scripts and the large-value socket
path included) goes through :func:`translating`, so that outside this subpackage no ``redis.exceptions`` error is
ever seen, except the lost connections and timeouts of :data:`~.client.TRANSIENT_ERRORS`, which callers catch to
retry. The replies that a user can meet, and what they become:

===============  =========================================================  ==============================
reply            cause                                                      exception
===============  =========================================================  ==============================
``OOM``          ``maxmemory`` reached, a policy that evicts nothing        :class:`ServerOutOfMemory`
``NOPERM``       the ACL user may not run a command or touch a key          :class:`PermissionDenied`
``READONLY``     a replica (``UNBLOCKED``: a server just became one)        :class:`ServerReadOnly`
``LOADING``      the server is loading its dataset (waited through)         :class:`ServerLoading`
``MISCONF``      an RDB snapshot failed, ``stop-writes-on-bgsave-error``    :class:`PersistenceFailed`
``MOVED``        a plain URL at a node of a Redis Cluster (``ASK`` too)     :class:`ConfigurationError`
``CLUSTERDOWN``  the same, the cluster down (``TRYAGAIN`` too)              :class:`ServerUnavailable`
any other        (a bug, or a server that is not Redis)                     :class:`ServerError`
===============  =========================================================  ==============================

A cluster backend (:mod:`.cluster`) follows ``MOVED``, ``ASK``, ``TRYAGAIN`` and ``CLUSTERDOWN`` itself; only a
client of one server meets them here.

redis-py raises some of them as a plain ``ResponseError`` (``MISCONF``; all of them when a Lua script's command
fails), so they are recognized by the reply's code as well as by redis-py's class.

Examples
--------
>>> reply_code(ValueError("OOM command not allowed when used memory > 'maxmemory'."))
'OOM'
>>> reply_code(ValueError("Error running script (...): @user_script:1: -MISCONF Redis is configured to save"))
'MISCONF'
>>> print(reply_code(ValueError("WRONGTYPE Operation against a key holding the wrong kind of value")))
None
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis

from ..errors import (
    ConfigurationError,
    PermissionDenied,
    PersistenceFailed,
    ServerError,
    ServerLoading,
    ServerOutOfMemory,
    ServerReadOnly,
    ServerUnavailable,
)

__all__ = ["CODES", "reply_code", "translate", "translating"]

CODES = tuple("OOM NOPERM READONLY LOADING MISCONF".split())
"""The error codes of Redis replies that get an exception of their own."""

_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (redis.exceptions.NoPermissionError, "NOPERM"),
    (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.BusyLoadingError, "LOADING"),
)
# a code at the start of the text (redis-py may have stripped it: then ``status_code`` holds it), after redis-py's
# note of a pipeline's failed command, or inside a Lua script's error (Redis 6: "Error running script (...):
# @user_script:1: -OOM command not allowed ...")
_CODE = re.compile(r"(?:^|: -|pipeline caused error: )(" + "|".join(CODES) + r") ")
_SCRIPT_DENIED = "The user executing the script can't"  # a command of a script refused by the ACL (no code)
_COMMAND = re.compile(r"permissions to run the '([^']+)' command")

_F = TypeVar("_F", bound=Callable[..., Any])


def reply_code(error: BaseException | str) -> str | None:
    """The code (one of :data:`CODES`) of a Redis error reply, from redis-py's exception or the reply's text."""
    if isinstance(error, BaseException):
        for cls, code in _CLASSES:
            if isinstance(error, cls):
                return code
        status = getattr(error, "status_code", None)
        if status in CODES:
            return cast(str, status)
    text = str(error)
    found = _CODE.search(text)
    if found:
        return found.group(1)
    if text.startswith("UNBLOCKED ") and "replica" in text:  # a blocked command when the server became a replica
        return "READONLY"
    return "NOPERM" if _SCRIPT_DENIED in text else None


def translate(error: Exception, where: str, user: str) -> Exception:
    """The package's exception for a redis-py one; a lost connection or a timeout is returned unchanged.

    Parameters
    ----------
    error : Exception
        What redis-py raised (or an error reply it returned in a pipeline).
    where : str
        The server, as :meth:`RedisAddress.describe` shows it.
    user : str
        The ACL user, as ``"user 'name'"`` or ``"the default user"``.
    """
    code = reply_code(error)
    text = str(error).strip()
    if code == "LOADING":
        return ServerLoading(
            f"Redis at {where} is loading its dataset into memory (LOADING: after a restart, or a replica syncing "
            "with its primary): wait until it has loaded"
        )
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return error
    if code == "OOM":
        return ServerOutOfMemory(
            f"Redis at {where} is out of memory and refused a write (OOM: its maxmemory is reached and its "
            "maxmemory-policy evicts nothing): raise its maxmemory, free memory (`dask-redisparam clean` removes "
            "what dead runs left), or compute in smaller pieces"
        )
    if code == "NOPERM":
        command = _COMMAND.search(text)
        what = f"the command {command.group(1).upper()}" if command else "a command or a key that the job uses"
        return PermissionDenied(
            f"Redis at {where} denies {user} {what} (NOPERM: {text}): the user's ACL must allow every command of "
            "dask-redisparam and the job's keys (see the security page of the documentation)"
        )
    if code == "READONLY":
        return ServerReadOnly(
            f"Redis at {where} is a read-only replica (READONLY): connect to its primary instead (the url, "
            "host/port or REDISPARAM_URL setting)"
        )
    if code == "MISCONF":
        return PersistenceFailed(
            f"Redis at {where} refuses writes because its last RDB snapshot failed (MISCONF, with "
            "stop-writes-on-bgsave-error yes): fix the cause that the server's log shows (its dir, free disk "
            "space); it accepts writes again after its next successful save (BGSAVE)"
        )
    if isinstance(error, redis.exceptions.AskError):  # MOVED or ASK to a client of one server (else: .cluster)
        return ConfigurationError(
            f"Redis at {where} is a node of a Redis Cluster and sends this job's slot elsewhere ({error}): use a "
            "redis+cluster://host:port[,host:port...] URL (or cluster=True)"
        )
    if isinstance(error, (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)):
        return ServerUnavailable(f"Redis at {where}, a node of a Redis Cluster, cannot serve the job now ({text})")
    return ServerError(f"Redis at {where} answered with an error: {text}")


def translating(method: _F) -> _F:
    """Wrap a method of a backend (an object with ``_where()``, ``_r`` and ``_describe_user()``) so that redis-py's
    errors leave it as the package's (:func:`translate`). After ``READONLY`` the connections are dropped: the next
    command connects again, to the new primary if a failover moved the address."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except redis.exceptions.RedisError as e:
            named = translate(e, self._where(), self._describe_user())
            if named is e:
                raise
            if isinstance(named, ServerReadOnly):  # after a failover, the address may lead to the new primary
                self._r.connection_pool.disconnect()
            raise named from None

    return cast(_F, call)

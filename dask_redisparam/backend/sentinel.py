"""The client of a Redis served through Sentinel: the primary of a service, found and followed through failovers.

:func:`sentinel_client` builds redis-py's ``Sentinel(nodes, sentinel_kwargs=...)`` and its ``master_for(service)``
client with the connection options every client of the package has (:func:`~.client._make_client` passes them), the
Sentinels' own credentials (``sentinel_username``, ``sentinel_password``) and, for ``rediss+sentinel://``, TLS to the
Sentinels as to the data servers (the same CA and client certificate files).

Every new connection asks the Sentinels where the primary is. A failover is followed by the connections themselves:

- a connection to a primary that died fails (``ConnectionError``, one of
  :data:`~.client.TRANSIENT_ERRORS`), and the next one goes to whichever server the Sentinels name then;
- a primary that was demoted to a replica answers writes with ``READONLY`` (blocked commands with ``UNBLOCKED``):
  the connection is dropped and the reply becomes a ``ConnectionError`` too (redis-py does so only for a command's
  own ``READONLY``, not inside a Lua script or a pipeline);
- a primary with fewer good replicas than its ``min-replicas-to-write`` answers ``NOREPLICAS``: the same, so the
  run waits for its replicas (or a failover) within the outage grace;
- while no Sentinel names a primary (a failover under way), connecting fails with ``_PrimaryUnknown``, also a
  ``ConnectionError``: callers wait it out within their outage handling.

The errors name the Sentinels and the service, and say what is wrong: no Sentinel answers, none knows the service,
the Sentinels refused their credentials.

:func:`primary_of` says which server a client's connections go to now, with no round trip: the manager compares it
turn by turn to see a failover (:mod:`dask_redisparam.manager.loop`).

Examples
--------
>>> from dask_redisparam.config.address import RedisAddress
>>> client = sentinel_client(RedisAddress.from_url("redis+sentinel://127.0.0.1:1/svc"), {"socket_timeout": 1.0})
>>> primary_of(client) is None  # no connection made yet
True
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection

from ..config.address import RedisAddress

__all__ = ["close_sentinels", "primary_of", "sentinel_client"]


class _PrimaryUnknown(MasterNotFoundError):
    """No Sentinel names a usable primary of the service (none answers, none knows it, or it is down: a failover
    may be under way). A ``ConnectionError``: a run waits for it as for a lost connection."""

    def __init__(self, message: str, *, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown  # True: the Sentinels answer but none monitors the service (waiting does not help)


class _SentinelAuthFailed(redis.AuthenticationError):
    """The Sentinels refused their credentials (``sentinel_username`` / ``sentinel_password``)."""


_DEMOTED = "READONLY UNBLOCKED".split()
"""Reply codes of a server that is a replica now: the primary we were connected to was demoted by a failover."""


class _FollowingConnection(SentinelManagedConnection):
    """A connection to the service's primary that treats the replies of a demoted primary as a lost connection."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py's Sentinel connection keeps a connection whose reply was cut off (a signal, a timeout) by default,
        # so that the next command would read the old reply: drop it, as a plain connection does
        kwargs.setdefault("disconnect_on_error", True)
        try:
            response = super().read_response(*args, **kwargs)
        except redis.ResponseError as e:
            self._demoted(str(e))
            raise
        if isinstance(response, redis.ResponseError):  # a pipeline's error replies come back as values
            self._demoted(str(response))
        return response

    def _demoted(self, text: str) -> None:
        where = f"{self.host}:{self.port}"
        if any(text.startswith(code) or f"-{code}" in text for code in _DEMOTED):
            self.disconnect()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError(
                f"the primary at {where} is a replica now (a Sentinel failover): reconnecting to the new one"
            )
        if text.startswith("NOREPLICAS") or "-NOREPLICAS" in text:  # min-replicas-to-write: wait for them
            self.disconnect()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError(
                f"the primary at {where} refuses writes: fewer good replicas than its min-replicas-to-write"
            )


class _FollowingSSLConnection(_FollowingConnection, SSLConnection):
    pass


class _Sentinels(Sentinel):
    """redis-py's ``Sentinel`` with errors that say what is wrong, naming the Sentinels and the service."""

    def __init__(self, address: RedisAddress, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.where = ",".join(f"{h}:{p}" for h, p in address.nodes)

    def discover_master(self, service_name: str) -> tuple[str, int]:
        unreachable: list[str] = []
        down = False
        for number, sentinel in enumerate(self.sentinels):
            kwargs = sentinel.connection_pool.connection_kwargs
            name = f"{kwargs.get('host')}:{kwargs.get('port')}"
            try:
                masters: Any = sentinel.sentinel_masters()
            except redis.AuthenticationError as e:
                raise _SentinelAuthFailed(
                    f"Sentinel {name} refused the Sentinels' credentials (sentinel_username/sentinel_password in the "
                    f"URL's query; the URL's own user and password are the data servers'): {e}"
                ) from None
            except redis.ResponseError as e:
                if "NOAUTH" in str(e) or "WRONGPASS" in str(e) or "NOPERM" in str(e):
                    raise _SentinelAuthFailed(
                        f"Sentinel {name} refused the Sentinels' credentials (sentinel_username/sentinel_password "
                        f"in the URL's query): {e}"
                    ) from None
                unreachable.append(f"{name}: {e}")
                continue
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                unreachable.append(f"{name}: {e}")
                continue
            state = masters.get(service_name)
            if state is None:
                continue
            if self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return str(state["ip"]), int(state["port"])
            down = True
        answered = len(self.sentinels) - len(unreachable)
        if answered == 0:
            raise _PrimaryUnknown(
                f"no Sentinel of service {service_name!r} answers at {self.where}: {'; '.join(unreachable)}"
            )
        if down:
            raise _PrimaryUnknown(
                f"the primary of service {service_name!r} is down for the Sentinels at {self.where} (a failover may be "
                "under way)"
            )
        raise _PrimaryUnknown(
            f"no Sentinel at {self.where} monitors a service {service_name!r} (check the service name: the "
            "'sentinel monitor <name> ...' line of sentinel.conf)",
            unknown=True,
        )


def _tls_options(address: RedisAddress) -> dict[str, Any]:
    """redis-py's TLS keywords for ``address`` (the server's certificate is always verified)."""
    if not address.tls:
        return {}
    return {
        "ssl_ca_certs": address.ca_file,
        "ssl_certfile": address.cert_file,
        "ssl_keyfile": address.key_file,
        "ssl_cert_reqs": "required",
    }


def sentinel_client(address: RedisAddress, common: dict[str, Any]) -> redis.Redis:
    """The client of the primary of ``address.service``, found through the Sentinels ``address.nodes``.

    Parameters
    ----------
    address : RedisAddress
        A sentinel address (``kind == "sentinel"``).
    common : dict
        redis-py keywords of every connection (credentials, database, timeouts, retry): those of the data servers.
        The Sentinels get the timeouts, their own credentials and TLS.
    """
    tls = _tls_options(address)
    sentinel_kwargs: dict[str, Any] = {
        "username": address.sentinel_username,
        "password": address.sentinel_password,
        "socket_timeout": common.get("socket_timeout"),
        "socket_connect_timeout": common.get("socket_connect_timeout"),
        "retry": Retry(NoBackoff(), 0),  # one try per Sentinel and discovery: the next Sentinel is the retry
    }
    if tls:
        sentinel_kwargs.update(ssl=True, **tls)
    sentinels = _Sentinels(address, sentinels=list(address.nodes), sentinel_kwargs=sentinel_kwargs)
    connection_class = _FollowingSSLConnection if address.tls else _FollowingConnection
    assert address.service is not None
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        address.service,
        connection_class=connection_class,
        socket_keepalive=True,
        **common,
        **tls,
    )
    client._sentinels = sentinels  # type: ignore[attr-defined]  # closed with the client (close_sentinels)
    return client


def primary_of(client: redis.Redis) -> str | None:
    """``host:port`` of the primary the client's connections go to now (None: not a Sentinel client, or no
    connection made yet); no round trip."""
    pool = client.connection_pool
    master = getattr(pool, "master_address", None)
    if not master:
        return None
    host, port = master
    return f"{host}:{port}"


def close_sentinels(client: redis.Redis) -> None:
    """Close the connections to the Sentinels of a client made by :func:`sentinel_client` (if any)."""
    sentinels = getattr(client, "_sentinels", None)
    if sentinels is not None:
        sentinels.close()

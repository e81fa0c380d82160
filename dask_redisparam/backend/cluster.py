"""Redis Cluster: each job on the primary of its slot, through an ordinary client and connection pool.

Every key of a job carries the ``{job}`` hash tag, so a job's keys share one slot and every pipeline and Lua script
of a job runs on one primary. A cluster backend therefore keeps the cluster's slot map (``CLUSTER SLOTS``) and one
ordinary :class:`redis.Redis` client (:class:`~.nodes.NodeClient`, its own connection pool) per primary: pipelines,
``EVALSHA`` scripts and the raw-socket reader of large values (:mod:`.large`) work as on a single server.
redis-py's :class:`~redis.cluster.RedisCluster` is not used: its pipelines refuse ``EVALSHA``, it has no one pool
per node to read large values from, and it needs ``COMMAND`` at start.

Which node a backend's ``_r`` is: every public method of the backend is wrapped by :func:`.slots.routing`, which
picks the slot from the method's first parameter (``jobname``, a key, a key pattern, the held keys, a worker's
report) for the thread that runs it (:meth:`ClusterMap.enter`); ``_r`` then is the client of that slot's primary.

When the cluster changes under a job, the node answers a command with a redirection instead of running it:

===============  =========================================  ======================================================
reply            cause                                      what :meth:`ClusterMap.redo` does
===============  =========================================  ======================================================
``MOVED``        the slot has a new owner (resharding,      refresh the slot map; send the command to the new owner
                 failover)
``ASK``          the slot is migrating, this key already    send ``ASKING`` and the command to the importing node
                 went (or is new)
``TRYAGAIN``     a multi-key command or script while the    wait (20 ms, doubling to 0.5 s), send it again to the owner
                 slot's keys are split over two nodes
``CLUSTERDOWN``  the cluster lost a primary (failover)      wait, refresh the map, send it again
===============  =========================================  ======================================================

Only the commands that were redirected are sent again (in a pipeline: after the others, in their order), as
``_execute`` does after ``NOSCRIPT``: a command that ran never runs twice. A lost connection (a primary that died)
marks the map stale, so that the next command finds the new primary; the caller repeats its turn, as after any lost
connection. A command still redirected after :data:`REDIRECT_GRACE` seconds raises
:class:`~dask_redisparam.errors.ServerUnavailable` naming the node and the slot.

Examples
--------
The slot a thread works on (nothing is sent until a command needs the map):

>>> cluster = ClusterMap(RedisAddress.from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"), NodeClient)
>>> previous = cluster.enter(4211)
>>> cluster.current_slot()
4211
>>> cluster.leave(previous)
>>> print(cluster.current_slot())
None
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from ..config.address import RedisAddress
from ..errors import ConfigurationError, PermissionDenied, ServerUnavailable
from .nodes import REDIRECTS, NodeClient

__all__ = ["REDIRECTS", "REDIRECT_GRACE", "ClusterMap"]

logger = logging.getLogger(__name__)

REDIRECT_GRACE = 20.0
"""Seconds one command keeps following redirections (a migration, a failover) before it fails."""

REFRESH_EVERY = 0.25
"""Least seconds between two refreshes of the slot map that nothing forced."""


def _code(error: Exception) -> str:
    """The reply's code of a redirection."""
    for cls, code in (
        (redis.exceptions.MovedError, "MOVED"),
        (redis.exceptions.AskError, "ASK"),
        (redis.exceptions.TryAgainError, "TRYAGAIN"),
    ):
        if isinstance(error, cls):
            return code
    return "CLUSTERDOWN"


def _describe(node: tuple[str, int]) -> str:
    host, port = node
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClusterMap:
    """The slot map of one Redis Cluster, a :class:`NodeClient` per node, and the slot each thread works on.

    Parameters
    ----------
    address : RedisAddress
        The cluster's address (``kind="cluster"``): its seed nodes and the credentials and TLS files of every node.
    make_client : callable
        ``make_client(node_address)`` -> a :class:`NodeClient` for one node (a ``kind="server"`` address).

    Attributes
    ----------
    scripts : dict
        SHA1 -> source of the backend's Lua scripts, loaded on a node that answers ``NOSCRIPT`` to a redirected
        ``EVALSHA``.
    redirects : collections.Counter
        Redirections followed, by reply (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``).
    """

    def __init__(self, address: RedisAddress, make_client: Callable[[RedisAddress], NodeClient]) -> None:
        self.address = address
        self._make_client = make_client
        self._clients: dict[tuple[str, int], NodeClient] = {}
        self._owners: list[tuple[str, int] | None] = [None] * 16384
        self._primaries: list[tuple[str, int]] = []
        self._lock = threading.RLock()
        self._local = threading.local()
        self._stale = True
        self._refreshed = -REFRESH_EVERY
        self.scripts: dict[str, str] = {}
        self.redirects: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------------------------------------ the map
    def client(self, node: tuple[str, int]) -> NodeClient:
        """The client of ``node`` (made once)."""
        with self._lock:
            found = self._clients.get(node)
            if found is None:
                a = self.address
                found = self._make_client(
                    RedisAddress(
                        host=node[0],
                        port=node[1],
                        username=a.username,
                        password=a.password,
                        tls=a.tls,
                        ca_file=a.ca_file,
                        cert_file=a.cert_file,
                        key_file=a.key_file,
                    )
                )
                found.slot_map = self
                self._clients[node] = found
            return found

    def stale(self) -> None:
        """Refresh the map before the next command (a connection failed: a primary may have died)."""
        self._stale = True

    def refresh(self, *, force: bool = False) -> None:
        """Read the slot map (``CLUSTER SLOTS``) from a known primary or, failing them, the seed nodes.

        Raises
        ------
        ConfigurationError
            A node answers that it is no cluster node (cluster support disabled).
        PermissionDenied
            The user may not run ``CLUSTER SLOTS``.
        ServerUnavailable
            No node answers.
        """
        if not force and time.monotonic() - self._refreshed < REFRESH_EVERY:
            return
        with self._lock:
            candidates = list(dict.fromkeys([*self._primaries, *self.address.nodes]))
            errors: list[str] = []
            for node in candidates:
                try:
                    reply = redis.Redis.execute_command(self.client(node), "CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                except redis.AuthenticationError:
                    raise  # named by the caller (ping): no other node would take these credentials either
                except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                    errors.append(f"{_describe(node)}: {e}")
                    continue
                except redis.exceptions.NoPermissionError as e:
                    user = f"user {self.address.username!r}" if self.address.username else "the default user"
                    raise PermissionDenied(
                        f"Redis at {_describe(node)} denies {user} the command CLUSTER SLOTS that a cluster address "
                        f"needs (NOPERM: {e}): add +cluster|slots to the user's ACL (every command dask-redisparam "
                        "needs is on the security page of the documentation)"
                    ) from None
                except redis.exceptions.ResponseError as e:
                    if "cluster support disabled" in str(e):
                        raise ConfigurationError(
                            f"Redis at {_describe(node)} is not a Redis Cluster node ({e}): use a redis:// URL, "
                            "without +cluster, and cluster=False"
                        ) from None
                    raise
                self._install(node, reply)
                return
            self._refreshed = time.monotonic()
            raise ServerUnavailable(
                f"cannot connect to Redis at {self.address.describe()}: no node answered ({'; '.join(errors)})"
            )

    def _install(self, asked: tuple[str, int], reply: Any) -> None:
        owners: list[tuple[str, int] | None] = [None] * 16384
        primaries: dict[tuple[str, int], None] = {}
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            if host in ("", "?"):  # the node does not know its own address: the one we asked
                host = asked[0]
            node = (host, int(primary[1]))
            primaries[node] = None
            owners[start : end + 1] = [node] * (end - start + 1)
        self._owners, self._primaries = owners, sorted(primaries)
        self._stale = False
        self._refreshed = time.monotonic()

    def owner(self, slot: int) -> tuple[str, int]:
        """The primary that serves ``slot`` (refreshing the map when stale or when no node serves it)."""
        if self._stale:
            try:
                self.refresh()
            except ServerUnavailable:
                if not self._primaries:
                    raise  # else: go on with the old map; the command meets the outage itself
        node = self._owners[slot]
        if node is None:
            self.refresh(force=True)
            node = self._owners[slot]
            if node is None:
                raise ServerUnavailable(
                    f"Redis at {self.address.describe()}: no primary serves slot {slot} (the cluster is down?)"
                )
        return node

    def primaries(self) -> list[NodeClient]:
        """The clients of every primary (for what spans jobs: listing jobs, ``SCAN``)."""
        if self._stale or not self._primaries:
            self.refresh(force=not self._primaries)
        return [self.client(node) for node in self._primaries]

    # --------------------------------------------------------------------------------------- the thread's slot
    def enter(self, slot: int | None) -> int | None:
        """Work on ``slot`` in this thread (None: keep the current one); returns the slot to :meth:`leave` to."""
        previous: int | None = getattr(self._local, "slot", None)
        if slot is not None:
            self._local.slot = slot
        return previous

    def leave(self, previous: int | None) -> None:
        """Go back to the slot :meth:`enter` returned."""
        self._local.slot = previous

    def current_slot(self) -> int | None:
        """The slot this thread works on (None: none yet)."""
        return cast(int | None, getattr(self._local, "slot", None))

    def current(self) -> NodeClient:
        """The client of the primary of this thread's slot (when it works on none: the first primary, or the first
        seed before the map is read, which a command it redirects does not mind)."""
        slot = self.current_slot()
        if slot is None:
            return self.client(self._primaries[0] if self._primaries else self.address.nodes[0])
        return self.client(self.owner(slot))

    def where(self) -> str:
        """The node and slot this thread works on, for error messages."""
        slot = self.current_slot()
        if slot is None or self._owners[slot] is None:
            return self.address.describe()
        return f"cluster node {_describe(cast(tuple[str, int], self._owners[slot]))} (slot {slot})"

    # ----------------------------------------------------------------------------------------- redirections
    def redo(self, args: Sequence[Any], options: dict[str, Any], error: Exception) -> Any:
        """Run a command that a node redirected (``error``) where the cluster says, until it runs or
        :data:`REDIRECT_GRACE` seconds pass; returns its parsed reply.

        Raises
        ------
        ServerUnavailable
            Still redirected after :data:`REDIRECT_GRACE` seconds; names the node and the slot.
        redis.exceptions.ResponseError
            Any other error reply of the command.
        """
        deadline = time.monotonic() + REDIRECT_GRACE
        slot = self.current_slot()
        pause, hops = 0.02, 0
        while True:
            self.redirects[_code(error)] += 1
            asking = False
            if isinstance(error, redis.exceptions.AskError):
                slot = error.slot_id
                node = (error.host, error.port)
                if isinstance(error, redis.exceptions.MovedError):
                    self._moved(slot, node)
                else:
                    asking = True
            else:  # TRYAGAIN, CLUSTERDOWN: wait, then ask the slot's owner
                if time.monotonic() > deadline:
                    raise ServerUnavailable(
                        f"Redis at {self.where()}: the cluster kept answering {_code(error)} ({error}) for "
                        f"{REDIRECT_GRACE:.0f} s"
                    ) from None
                time.sleep(pause)
                pause = min(2 * pause, 0.5)
                if isinstance(error, redis.exceptions.ClusterDownError):
                    self.stale()
                if slot is None:
                    raise error
                node = self.owner(slot)
            try:
                return self._run_on(node, args, options, asking)
            except (redis.ConnectionError, redis.TimeoutError):
                self.stale()  # the node the map or the redirection named is gone: a failover under way
                raise
            except REDIRECTS as e:
                if time.monotonic() > deadline:
                    raise ServerUnavailable(
                        f"Redis at {_describe(node)} (slot {slot}): still redirected after {REDIRECT_GRACE:.0f} s ({e})"
                    ) from None
                hops += 1
                if hops > 4 and isinstance(e, redis.exceptions.AskError):  # redirected around: let the map settle
                    time.sleep(pause)
                    pause = min(2 * pause, 0.5)
                error = e

    def _moved(self, slot: int, node: tuple[str, int]) -> None:
        """A node said ``MOVED slot node``: note it at once, and refresh the whole map soon."""
        if self._owners[slot] != node:
            logger.info("Redis Cluster: slot %d moved to %s", slot, _describe(node))
        with self._lock:
            self._owners[slot] = node
            if node not in self._primaries:
                self._primaries = sorted({*self._primaries, node})
        self._stale = True
        self._refreshed = -REFRESH_EVERY

    def _run_on(self, node: tuple[str, int], args: Sequence[Any], options: dict[str, Any], asking: bool) -> Any:
        """Run one command on ``node`` (after ``ASKING``), loading a script it does not know (``NOSCRIPT``)."""
        client = self.client(node)
        for attempt in range(2):
            try:
                if not asking:
                    return redis.Redis.execute_command(client, *args, **options)  # type: ignore[no-untyped-call]
                pipe = redis.client.Pipeline(client.connection_pool, client.response_callbacks, False, None)
                pipe.execute_command("ASKING")  # type: ignore[no-untyped-call]
                pipe.execute_command(*args, **options)  # type: ignore[no-untyped-call]
                reply = pipe.execute(raise_on_error=False)[1]
                if isinstance(reply, Exception):
                    raise reply
                return reply
            except redis.exceptions.NoScriptError:
                source = self.scripts.get(str(args[1])) if str(args[0]).upper() == "EVALSHA" else None
                if source is None or attempt:
                    raise
                redis.Redis.execute_command(client, "SCRIPT LOAD", source)  # type: ignore[no-untyped-call]
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release every node's connections."""
        with self._lock:
            for client in self._clients.values():
                client.close()

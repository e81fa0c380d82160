"""The clients of a Redis Cluster's nodes: ordinary :class:`redis.Redis` clients (each with its own connection pool)
that hand a command a node redirected to their :class:`~.cluster.ClusterMap`, which sends it where the cluster
says (:meth:`~.cluster.ClusterMap.redo`); their pipelines do the same for the commands of a pipeline, and only for
those.

Examples
--------
>>> client = NodeClient(host="127.0.0.1", port=7000)  # no connection until a command
>>> isinstance(client.pipeline(transaction=False), NodePipeline)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
import redis.client

if TYPE_CHECKING:
    from .cluster import ClusterMap

__all__ = ["REDIRECTS", "ClusterScript", "NodeClient", "NodePipeline"]

REDIRECTS: tuple[type[Exception], ...] = (
    redis.exceptions.AskError,  # MovedError derives from it
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
"""The replies of a cluster node that mean "not here, not now": the command did not run."""


class NodeClient(redis.Redis):
    """An ordinary client of one primary that follows redirections per command (:meth:`.cluster.ClusterMap.redo`).

    Its :meth:`pipeline` gives a :class:`NodePipeline`, which does the same for the commands of a pipeline.
    """

    slot_map: ClusterMap | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command here; if the node redirects it, where the cluster says; mark the map stale when the
        connection fails."""
        try:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except REDIRECTS as e:
            if self.slot_map is None:
                raise
            return self.slot_map.redo(args, options, e)
        except redis.exceptions.ResponseError as e:
            # a blocking command (BLMOVE) of a primary that became a replica (a failover): it did not run
            if self.slot_map is None or not str(e).startswith("UNBLOCKED"):
                raise
            self.slot_map.stale()
            return self.slot_map.redo(args, options, redis.exceptions.ClusterDownError(str(e)))
        except (redis.ConnectionError, redis.TimeoutError):
            if self.slot_map is not None:
                self.slot_map.stale()
            raise

    def register_script(self, script: Any) -> Any:
        """A script that runs on the primary of the calling thread's slot, whichever node registered it."""
        return ClusterScript(self.slot_map, script) if self.slot_map is not None else super().register_script(script)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> NodePipeline:
        """A pipeline on this node's pool whose redirected commands follow the cluster."""
        return NodePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint, self.slot_map)


class ClusterScript:
    """A Lua script for :meth:`NodeClient.register_script`: ``EVALSHA`` on the current thread's primary, loaded
    there when missing (the backend's own scripts are :class:`~.client._Script`, which does the same)."""

    def __init__(self, slot_map: ClusterMap, script: str) -> None:
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._slot_map = slot_map
        slot_map.scripts[self.sha] = script

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        node = client or self._slot_map.current()
        try:
            return node.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            node.script_load(self.script)
            return node.evalsha(self.sha, len(keys), *keys, *args)


class NodePipeline(redis.client.Pipeline):
    """A pipeline on one node that sends its redirected commands again, only those, where the cluster says.

    Attributes
    ----------
    redirected : list of int
        Positions of the commands that the last :meth:`execute` sent again after the pipeline.
    """

    def __init__(
        self, pool: Any, callbacks: Any, transaction: bool, shard_hint: Any, slot_map: ClusterMap | None
    ) -> None:
        super().__init__(pool, callbacks, transaction, shard_hint)
        self.slot_map = slot_map
        self.redirected: list[int] = []

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Run the pipeline; then each redirected command again, in order, where the cluster says."""
        stack = list(self.command_stack)
        try:
            replies = list(super().execute(raise_on_error=False))
        except (redis.ConnectionError, redis.TimeoutError):
            if self.slot_map is not None:
                self.slot_map.stale()
            raise
        self.redirected = [i for i, reply in enumerate(replies) if isinstance(reply, REDIRECTS)]
        if self.slot_map is not None:
            for i in self.redirected:
                args, options = stack[i]
                try:
                    replies[i] = self.slot_map.redo(args, options, replies[i])
                except redis.exceptions.ResponseError as e:
                    replies[i] = e
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

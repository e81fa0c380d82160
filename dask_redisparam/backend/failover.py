"""What of a run survived a failover: the reads behind the manager's reconciliation after one.

(The policy is :mod:`dask_redisparam.manager.failover`.)

A replica that becomes the primary has the writes it had received: those the old primary acknowledged and had not
sent on yet are lost. :class:`FailoverOps` tells the manager which server it talks to now (:meth:`~FailoverOps.primary`,
no round trip: a change is a failover) and takes one consistent look at what the new primary holds of a run
(:meth:`~FailoverOps.snapshot_run`, two round trips: the job's workers, then one Lua script reading every list at
once, so that no message is seen twice or missed while it moves between them).

Examples
--------
>>> from dask_redisparam.backend import Backend
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.open_run("doc-job", "r1", 4.0, {"0": b"x"})
...     look = backend.snapshot_run("doc-job", "r1")
...     backend.close_run("doc-job", "r1")
...     backend.close()
>>> look.alive, sorted(look.fields), look.queued, look.held
(True, ['0'], set(), set())
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from ..wire.protocol import VERSION
from . import keys
from .large import LargeValues
from .sentinel import primary_of

__all__ = ["SNAPSHOT", "FailoverOps", "RunSnapshot"]

SNAPSHOT = """
-- KEYS: alive, data, queue, done, then the workers' processing lists; ARGV[1]: the header of the run's messages
local prefix = ARGV[1]
local n = #prefix
local function ids(list)
  local out = {}
  for _, m in ipairs(list) do
    if string.sub(m, 1, n) == prefix then
      local id = string.match(m, "^(%d+)|", n + 1)
      if id then out[#out + 1] = id end
    end
  end
  return out
end
local held = {}
for i = 5, #KEYS do
  for _, id in ipairs(ids(redis.call("LRANGE", KEYS[i], 0, -1))) do held[#held + 1] = id end
end
return {redis.call("EXISTS", KEYS[1]), redis.call("HKEYS", KEYS[2]), ids(redis.call("LRANGE", KEYS[3], 0, -1)),
  held, redis.call("LRANGE", KEYS[4], 0, -1)}
"""
"""One look at a run: ``alive`` exists, the data hash's fields, the ids of the run's messages in the queue and in
processing lists, the items of the ``done`` list (read by the manager, which parses their message ids)."""


class RunSnapshot(NamedTuple):
    """What the server holds of a run (:meth:`FailoverOps.snapshot_run`).

    Attributes
    ----------
    alive : bool
        The run's ``alive`` key exists.
    fields : set of str
        The fields of its data hash (values, parts of large values).
    queued, held : set of int
        Ids of its messages in the job's queue, and in workers' processing lists.
    records : list of bytes
        The items of its ``done`` list (completion records, notices), unread.
    """

    alive: bool
    fields: set[str]
    queued: set[int]
    held: set[int]
    records: list[bytes]


class FailoverOps(LargeValues):
    """Which primary the connections go to, and what a run has there after a failover."""

    def primary(self) -> str | None:
        """``host:port`` of the primary the connections go to now, for a Sentinel address (None otherwise, or before
        the first connection); no round trip."""
        return primary_of(self._r)

    def replicated(self, jobname: str, run_id: str, replicas: int, timeout: float) -> int:
        """How many replicas have every write made so far on this server (up to ``replicas``; waiting at most
        ``timeout`` seconds): a renewal of the run's ``alive`` key then ``WAIT``, on one connection. A primary has
        one replication stream, so this covers the workers' writes that came before it too."""

        def build(pipe: Any) -> None:
            pipe.pexpire(keys.alive(jobname, run_id), 4000)
            pipe.execute_command("WAIT", replicas, max(1, int(timeout * 1000)))

        return int(self._execute(build)[-1])

    def notify_run(self, jobname: str, run_id: str, notice: bytes) -> bool:
        """Push ``notice`` to a live run's ``done`` list, for its manager (False, pushing nothing, if it is gone)."""
        return bool(self._notify(keys=[keys.alive(jobname, run_id), keys.done(jobname, run_id)], args=[notice]))

    def snapshot_run(self, jobname: str, run_id: str) -> RunSnapshot:
        """One consistent look at what the server holds of a run (two round trips; once per failover)."""
        workers = [w.decode() for w in cast(set[bytes], self._r.smembers(keys.workers(jobname)))]
        script = getattr(self, "_snapshot", None)
        if script is None:
            script = self._snapshot = self._r.register_script(SNAPSHOT)
        script_keys = [keys.alive(jobname, run_id), keys.data(jobname, run_id), keys.queue(jobname)]
        script_keys += [keys.done(jobname, run_id), *(keys.processing(jobname, w) for w in sorted(workers))]
        reply: Any = script(keys=script_keys, args=[VERSION + b"|" + run_id.encode() + b"|"])
        alive, fields, queued, held, records = reply
        return RunSnapshot(
            bool(alive),
            {f.decode() for f in fields},
            {int(i) for i in queued},
            {int(i) for i in held},
            list(records),
        )

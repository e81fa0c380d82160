"""Worker resources in Redis: the queues of resource classes and the claims that book a daemon's resources.

A message whose tasks need resources waits in the queue of its class (:func:`~.keys.rqueue`), never in the job's
shared queue. A worker whose daemon has resources claims from those queues with :data:`CLAIM_RESOURCE`, a script
that, atomically, checks that the daemon's free resources cover the class, moves the message into the worker's
processing list (the same reliable dequeue as the shared queue's), adds the class's amounts to the daemon's use
(:func:`~.keys.daemon`: ``use|<name>``, shared by the daemon's processes) and writes the worker's claim
(:func:`~.keys.claim`: class, daemon, the message's header). A worker holds at most one such message.

Nothing is only in a worker's memory: completing the message and then :data:`RELEASE_CLAIM` frees the use (only
once the message has left the processing list); :data:`REQUEUE_CLAIM`, run before a dead worker is reaped or a
stopping one deregisters, sends the message back to its class's queue and frees the use. A daemon's hash goes away
when nothing is in use (each claim writes its capacities again).

Managers list the classes of their live runs in :func:`~.keys.resource_classes` (``<class>|<run>`` fields, renewed
each turn of their loop with the lease's TTL, deleted when the run closes), which workers read to know where to
look (:meth:`ResourceOps.resource_classes`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, cast

from ..wire.resources import Resources
from . import keys
from .large import LargeValues

__all__ = ["CLAIM_RESOURCE", "RELEASE_CLAIM", "REQUEUE_CLAIM", "ResourceOps"]

# Lua: give back a claim's amounts (the class text "A=1.0,B=2.0") to the daemon hash KEYS[2] (if it exists), and
# delete the hash when nothing is in use any more.
_FREE = """
local function free(cls)
  if redis.call('EXISTS', KEYS[2]) == 0 then return end
  for name, amount in string.gmatch(cls, '([^,=]+)=([^,]+)') do
    redis.call('HINCRBYFLOAT', KEYS[2], 'use|' .. name, -tonumber(amount))
  end
  local fields = redis.call('HGETALL', KEYS[2])
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 4) == 'use|' and tonumber(fields[i + 1]) > 1e-9 then return end
  end
  redis.call('DEL', KEYS[2])
end
"""

# Claim one message of the first class queue (KEYS[4..]) whose demand the daemon's free resources cover.
# KEYS: claim, daemon, proc, queues. ARGV: daemon id, k, k capacity pairs (name, amount), then per queue its class,
# m, m demand pairs. Returns {class, message}, or nil (nothing claimable; also while the worker holds a claim).
CLAIM_RESOURCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local k = tonumber(ARGV[2])
local pos = 3
for i = 1, k do
  redis.call('HSET', KEYS[2], 'cap|' .. ARGV[pos], ARGV[pos + 1])
  pos = pos + 2
end
for q = 4, #KEYS do
  local cls, m = ARGV[pos], tonumber(ARGV[pos + 1])
  local first, fits = pos + 2, true
  for j = first, first + 2 * m - 2, 2 do
    local cap = tonumber(redis.call('HGET', KEYS[2], 'cap|' .. ARGV[j]) or '0')
    local used = tonumber(redis.call('HGET', KEYS[2], 'use|' .. ARGV[j]) or '0')
    if used + tonumber(ARGV[j + 1]) > cap + 1e-9 then fits = false end
  end
  if fits then
    local msg = redis.call('LMOVE', KEYS[q], KEYS[3], 'RIGHT', 'LEFT')
    if msg then
      for j = first, first + 2 * m - 2, 2 do redis.call('HINCRBYFLOAT', KEYS[2], 'use|' .. ARGV[j], ARGV[j + 1]) end
      local head = string.match(msg, '^[^|]*|[^|]*|[^|]*|[^|]*|') or msg
      redis.call('HSET', KEYS[1], 'class', cls, 'daemon', ARGV[1], 'head', head)
      return {cls, msg}
    end
  end
  pos = first + 2 * m
end
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 4) == 'use|' and tonumber(fields[i + 1]) > 1e-9 then return nil end
end
redis.call('DEL', KEYS[2])
return nil
"""

# The worker completed its resource message: free the use, unless the message is still in its processing list
# (the completion did not happen). KEYS: claim, daemon, proc. Returns 1 freed, 0 no claim, -1 still held.
RELEASE_CLAIM = (
    _FREE
    + """
local head = redis.call('HGET', KEYS[1], 'head')
if not head then return 0 end
for _, item in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if string.sub(item, 1, #head) == head then return -1 end
end
free(redis.call('HGET', KEYS[1], 'class'))
redis.call('DEL', KEYS[1])
return 1
"""
)

# A worker stops or died: its resource message goes back to its class's queue (consumed next), the use is freed.
# KEYS: claim, daemon, proc, the class's queue. ARGV: the class read from the claim. Returns {header, the server's
# time in microseconds} of the message moved, or 0.
REQUEUE_CLAIM = (
    _FREE
    + """
if redis.call('HGET', KEYS[1], 'class') ~= ARGV[1] then return 0 end
local head = redis.call('HGET', KEYS[1], 'head')
local moved = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if string.sub(item, 1, #head) == head then
    redis.call('LREM', KEYS[3], 1, item)
    redis.call('RPUSH', KEYS[4], item)
    moved = 1
    break
  end
end
free(ARGV[1])
redis.call('DEL', KEYS[1])
if moved == 0 then return 0 end
local now = redis.call('TIME')
return {head, now[1] .. string.format('%06d', tonumber(now[2]))}
"""
)


class ResourceOps(LargeValues):
    """Claims of resource messages and the classes of live runs (see the module docstring)."""

    @functools.cached_property
    def _claim_resource(self) -> Any:
        return self._r.register_script(CLAIM_RESOURCE)

    @functools.cached_property
    def _release_claim(self) -> Any:
        return self._r.register_script(RELEASE_CLAIM)

    @functools.cached_property
    def _requeue(self) -> Any:
        return self._r.register_script(REQUEUE_CLAIM)

    def resource_classes(self, jobname: str) -> set[str]:
        """The resource classes that live runs of the job queue messages for."""
        fields = cast(Iterable[bytes], self._r.hkeys(keys.resource_classes(jobname)))
        return {f.decode().rsplit("|", 1)[0] for f in fields}

    def claim_resource(
        self,
        jobname: str,
        worker_id: str,
        daemon_id: str,
        capacity: Resources,
        classes: Sequence[tuple[str, Resources]],
    ) -> tuple[str, bytes] | None:
        """Claim the next message of the first of ``classes`` (``(class name, demand)``) that the daemon's free
        ``capacity`` covers, booking its demand (:data:`CLAIM_RESOURCE`); ``(class, message)`` or None."""
        if not classes:
            return None
        args: list[Any] = [daemon_id, len(capacity)]
        for name, amount in capacity:
            args += [name, repr(float(amount))]
        for cls, demand in classes:
            args += [cls, len(demand)]
            for name, amount in demand:
                args += [name, repr(float(amount))]
        script_keys = [
            keys.claim(jobname, worker_id),
            keys.daemon(jobname, daemon_id),
            keys.processing(jobname, worker_id),
            *(keys.rqueue(jobname, cls) for cls, _ in classes),
        ]
        got = self._claim_resource(keys=script_keys, args=args)
        if not got:
            return None
        return bytes(got[0]).decode(), bytes(got[1])

    def release_claim(self, jobname: str, worker_id: str, daemon_id: str) -> int:
        """Free the resources of the worker's completed resource message (:data:`RELEASE_CLAIM`): 1 freed, 0 the
        worker held none, -1 the message is still in its processing list (nothing freed)."""
        script_keys = [
            keys.claim(jobname, worker_id),
            keys.daemon(jobname, daemon_id),
            keys.processing(jobname, worker_id),
        ]
        return int(self._release_claim(keys=script_keys, args=[]))

    def requeue_claim(self, jobname: str, worker_id: str) -> tuple[str, int, int] | None:
        """Send the resource message a worker holds back to its class's queue and free its daemon's resources
        (before the worker is reaped or deregisters): ``(run id, message id, stamp)`` of the message moved (stamp:
        the server's time in microseconds), or None."""
        fields = cast(dict[bytes, bytes], self._r.hgetall(keys.claim(jobname, worker_id)))
        if not fields or b"class" not in fields or b"daemon" not in fields:
            return None
        cls, daemon_id = fields[b"class"].decode(), fields[b"daemon"].decode()
        script_keys = [
            keys.claim(jobname, worker_id),
            keys.daemon(jobname, daemon_id),
            keys.processing(jobname, worker_id),
            keys.rqueue(jobname, cls),
        ]
        got = self._requeue(keys=script_keys, args=[cls])
        if not got:
            return None
        _, run_id, msg_id, _ = bytes(got[0]).decode(errors="replace").split("|", 3)
        return run_id, int(msg_id), int(got[1])

    def use_of(self, jobname: str, daemon_id: str) -> dict[str, float]:
        """What a daemon uses of its resources now (``{name: amount}``; empty when nothing is in use)."""
        fields = cast(dict[bytes, bytes], self._r.hgetall(keys.daemon(jobname, daemon_id)))
        return {k.decode()[4:]: float(v) for k, v in fields.items() if k.startswith(b"use|")}

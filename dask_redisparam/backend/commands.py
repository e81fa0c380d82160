"""Every Redis command that a job sends, and the start-up check that the user may run each of them.

:data:`JOB_COMMANDS` lists them (as the ACL names them, ``script|load`` for a subcommand), read from what the
backend actually sends (``tests/test_acl_commands.py`` checks that it is exactly that set, the commands inside the
Lua scripts included, and the documented ACL rule of the security page too). :func:`check_commands` runs each of
them once, in one pipelined round trip, on a scratch key of the job (:func:`~dask_redisparam.backend.keys.probe`) and in
a form that changes nothing: the scratch key is a string, so the list, hash and set commands answer
``WRONGTYPE``; the script runs an unknown digest (``NOSCRIPT``); ``SCRIPT LOAD`` gets a script that does not
compile. Redis checks the ACL before it runs a command, so a command the user may not run answers ``NOPERM`` and
any other reply means it is allowed.

``ACL DRYRUN`` (Redis 7) would do the same without running anything, but it needs a permission of its own that the
documented rule does not give (nor should: it reveals other users' rules); trying it without that permission
would leave a refusal in ``ACL LOG`` at every start of a worker.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from . import keys
from .replies import reply_code

__all__ = ["CLUSTER_COMMANDS", "JOB_COMMANDS", "WAIT_COMMAND", "check_commands"]

JOB_COMMANDS: dict[str, list[str]] = {
    "set": ["SET", "{key}", "1", "PX", "10000"],  # first: the other probes find a string there
    "exists": ["EXISTS", "{key}"],
    "expire": ["EXPIRE", "{key}", "10"],
    "pexpire": ["PEXPIRE", "{key}", "10000"],
    "pttl": ["PTTL", "{key}"],
    "persist": ["PERSIST", "{key}"],
    "rename": ["RENAME", "{key}", "{key}"],
    "lpush": ["LPUSH", "{key}", "x"],
    "rpush": ["RPUSH", "{key}", "x"],
    "lrange": ["LRANGE", "{key}", "0", "0"],
    "llen": ["LLEN", "{key}"],
    "lindex": ["LINDEX", "{key}", "0"],
    "lrem": ["LREM", "{key}", "1", "x"],
    "ltrim": ["LTRIM", "{key}", "0", "-1"],
    "lmove": ["LMOVE", "{key}", "{key}", "RIGHT", "LEFT"],
    "blmove": ["BLMOVE", "{key}", "{key}", "RIGHT", "LEFT", "0.01"],
    "hset": ["HSET", "{key}", "f", "x"],
    "hget": ["HGET", "{key}", "f"],
    "hmget": ["HMGET", "{key}", "f"],
    "hgetall": ["HGETALL", "{key}"],
    "hkeys": ["HKEYS", "{key}"],
    "hdel": ["HDEL", "{key}", "f"],
    "hexists": ["HEXISTS", "{key}", "f"],
    "hincrby": ["HINCRBY", "{key}", "f", "1"],
    "hincrbyfloat": ["HINCRBYFLOAT", "{key}", "f", "1"],
    "xadd": ["XADD", "{key}", "*", "f", "x"],
    "xrevrange": ["XREVRANGE", "{key}", "+", "-", "COUNT", "1"],
    "memory|usage": ["MEMORY", "USAGE", "{key}"],
    "sadd": ["SADD", "{key}", "x"],
    "srem": ["SREM", "{key}", "x"],
    "smembers": ["SMEMBERS", "{key}"],
    "scard": ["SCARD", "{key}"],
    "evalsha": ["EVALSHA", "{sha}", "1", "{key}"],
    "script|load": ["SCRIPT", "LOAD", "("],
    "ping": ["PING"],
    "time": ["TIME"],
    "scan": ["SCAN", "0", "MATCH", "{key}", "COUNT", "1"],
    "del": ["DEL", "{key}"],  # last: removes the scratch key
}
"""ACL name of each command the job sends -> a harmless call of it (``{key}``: the scratch key; ``{sha}``: a
digest of no script)."""

WAIT_COMMAND: dict[str, list[str]] = {"wait": ["WAIT", "0", "0"]}
"""The command a worker with ``replicas`` > 0 sends after each completion (no replica to wait for: returns at once)."""

CLUSTER_COMMANDS: dict[str, list[str]] = {
    "cluster|slots": ["CLUSTER", "SLOTS"],  # the slot map (:mod:`.cluster`), at start and after a change
    "asking": ["ASKING"],  # before a command that a migrating slot's node redirected (ASK)
}
"""The commands a job sends besides :data:`JOB_COMMANDS` on a Redis Cluster, checked for a cluster address only."""

_REFUSING_WRITES = {"OOM", "READONLY", "MISCONF"}
"""Codes of the replies that say the server refuses writes (not an ACL matter)."""


def check_commands(
    client: Any, jobname: str, extra: dict[str, list[str]] | None = None, *, wait: bool = False
) -> tuple[list[str], list[str], list[Exception]]:
    """Run every command of :data:`JOB_COMMANDS` (and of ``extra``: :data:`CLUSTER_COMMANDS` on a cluster; with
    ``wait``, :data:`WAIT_COMMAND`) once, harmlessly, in one round trip.

    Parameters
    ----------
    client : redis.Redis
        The connection, as the user to check.
    jobname : str
        The job whose keys the commands touch.
    extra : dict, optional
        More commands to check (name -> harmless call), sent before the last one (``DEL``).

    Returns
    -------
    denied_commands : list of str
        Commands the user may not run (``NOPERM`` for the command), as the ACL names them.
    denied_keys : list of str
        Commands refused because of the scratch key (the ACL's key patterns do not cover the job's keys).
    other_errors : list of Exception
        The other error replies of write commands that say the server cannot be used as it is (``OOM``,
        ``READONLY``, ``MISCONF``); replies such as ``WRONGTYPE`` or ``NOSCRIPT`` are what the probes expect.
    """
    values = {"key": keys.probe(jobname, uuid.uuid4().hex[:12]), "sha": hashlib.sha1(uuid.uuid4().bytes).hexdigest()}
    extra = {**(extra or {}), **(WAIT_COMMAND if wait else {})}
    probes = dict(list(JOB_COMMANDS.items())[:-1]) | extra | dict(list(JOB_COMMANDS.items())[-1:])
    pipe = client.pipeline(transaction=False)
    for words in probes.values():
        pipe.execute_command(*(word.format(**values) for word in words))
    replies = pipe.execute(raise_on_error=False)
    denied_commands: list[str] = []
    denied_keys: list[str] = []
    other: list[Exception] = []
    for name, reply in zip(probes, replies, strict=True):
        if not isinstance(reply, Exception):
            continue
        code = reply_code(reply)
        if code == "NOPERM":
            (denied_commands if "to run the" in str(reply) else denied_keys).append(name)
        elif code in _REFUSING_WRITES:
            other.append(reply)
    return denied_commands, denied_keys, other

"""Resume: a compute reuses the values that a dead run of the same job left in Redis, found by task identity.

A run with resume on (``resume_ttl > 0``) registers in the job's registry of runs (:mod:`dask_redisparam.backend.
resume`) with a record of its manager (:func:`manager_record`) and the identities of its tasks
(:mod:`dask_redisparam.manager.identity`) in field order. When its manager dies, or ends by an exception other
than :class:`~dask_redisparam.errors.ServerOutOfMemory`, its values stay ``resume_ttl`` seconds.

A later compute of the job looks them up with :class:`Resumer`, the ``find`` callback of
:func:`~dask_redisparam.manager.graph.prepare_graph`: it reads the registry, declares dead the runs whose manager
ran on this host with a process that no longer exists (:func:`manager_gone`: their ``alive`` key is deleted, so
that workers drop their queued messages at once), and keeps the dead runs (``alive`` gone) whose data hash still
holds a value for an identity the compute needs. The graph is then culled at those keys, as ``redo=`` does, and
their values (with the parts of large ones, ``~<field>-<token>.<n>``) are copied into the new run's data hash
inside Redis before it starts. A *live* run is never reused: two live managers computing the same identities each
compute them (each gets exact results).

Examples
--------
>>> record = json.loads(manager_record(tasks=3, keep=60.0))
>>> sorted(record)
['host', 'keep', 'pid', 'pidns', 'proc', 'started', 'tasks']
>>> manager_gone(record)  # this process
False
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .identity import IDENTITY_BYTES

if TYPE_CHECKING:
    from ..backend import Backend

__all__ = [
    "NO_IDENTITY",
    "Adopted",
    "Resumer",
    "RunInfo",
    "identity_bytes",
    "list_runs",
    "manager_gone",
    "manager_record",
    "pid_namespace",
    "process_start",
]

logger = logging.getLogger(__name__)

NO_IDENTITY = bytes(IDENTITY_BYTES)
"""The identity recorded for a field that cannot be resumed."""


def process_start(pid: int) -> str:
    """A token of when process ``pid`` started (Linux: its start time in clock ticks since boot), "" if unknown,
    so that a pid used again by another process is told apart.

    Examples
    --------
    >>> process_start(os.getpid()) == process_start(os.getpid())
    True
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state is fields[0], starttime fields[19]
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):  # a zombie is dead
        return "gone"
    return fields[19].decode()


def pid_namespace() -> str:
    """The process's pid namespace ("" if unknown): two containers with one host name do not share pids.

    Examples
    --------
    >>> pid_namespace() == pid_namespace()
    True
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def manager_record(tasks: int, keep: float) -> bytes:
    """The registry record of a run of this process: host, pid namespace, pid, process start, start time, tasks,
    keep TTL."""
    pid = os.getpid()
    record = {
        "host": socket.gethostname(),
        "pidns": pid_namespace(),
        "pid": pid,
        "proc": process_start(pid),
        "started": time.time(),
        "tasks": tasks,
        "keep": keep,
    }
    return json.dumps(record).encode()


def manager_gone(record: Mapping[str, Any]) -> bool:
    """Whether a run's manager surely no longer exists: it ran on this host (in this pid namespace) and its process
    is gone (or the pid now belongs to a process started at another time). A manager elsewhere is never judged here
    (its lease tells)."""
    if record.get("host") != socket.gethostname() or record.get("pidns", "") != pid_namespace():
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process exists with that pid
        pass
    now = process_start(pid)
    return now == "gone" or bool(record.get("proc")) and bool(now) and now != record.get("proc")


def identity_bytes(keys_by_field: Iterable[Hashable], identities: Mapping[Hashable, bytes]) -> bytes:
    """The identities of ``keys_by_field`` (in field order) concatenated; zeros for a key without one.

    Examples
    --------
    >>> identity_bytes(["a", "b"], {"b": b"x" * 16}) == bytes(16) + b"x" * 16
    True
    """
    return b"".join(identities.get(key, NO_IDENTITY) for key in keys_by_field)


@dataclasses.dataclass(frozen=True)
class Adopted:
    """A value the new run takes from a dead run: the run, its field there, and the fields of its parts."""

    run_id: str
    field: str
    parts: tuple[str, ...]


@dataclasses.dataclass
class _Source:
    run_id: str
    died_ago: float
    fields: dict[bytes, str]  # identity -> field holding its value
    parts: dict[str, tuple[str, ...]]  # field -> its parts' fields


class Resumer:
    """Finds the values of dead runs of a job by task identity; the ``find`` callback of ``prepare_graph``.

    Parameters
    ----------
    backend : Backend
        The connection.
    jobname : str
        The job whose dead runs are searched.

    Attributes
    ----------
    adopted : dict
        Key -> :class:`Adopted`, filled by the call.
    sources : list
        The dead runs searched (their ids), each with the seconds since its manager's last renewal.
    needed : int
        How many keys the compute needed (the call's identities and unstable keys).
    """

    def __init__(self, backend: Backend, jobname: str) -> None:
        self.backend, self.jobname = backend, jobname
        self.adopted: dict[Hashable, Adopted] = {}
        self.sources: list[tuple[str, float]] = []
        self.needed = 0
        self._by_identity: dict[bytes, tuple[_Source, str]] = {}

    def load(self) -> None:
        """Read the registry and the dead runs' fields (two round trips: the registry, then one pipeline for all
        its runs); prune the entries of runs whose values are gone."""
        registered = self.backend.registered_runs(self.jobname)
        if not registered:
            return
        records: dict[str, dict[str, Any]] = {}
        for rid, (raw, _, _) in registered.items():
            try:
                records[rid] = dict(json.loads(raw))
            except (ValueError, TypeError):
                records[rid] = {}
        kill = [rid for rid, record in records.items() if manager_gone(record)]
        probes = self.backend.probe_runs(self.jobname, sorted(registered), kill)
        stale = [rid for rid, probe in probes.items() if not probe.alive and probe.pttl < 0]
        if stale:
            self.backend.forget_runs(self.jobname, stale)
        for rid in kill:
            logger.info(
                "manager: run %s of job %r lost its manager (pid %s is gone)",
                rid,
                self.jobname,
                records[rid].get("pid"),
            )
        dead = [(rid, probe) for rid, probe in probes.items() if not probe.alive and probe.pttl >= 0]
        dead.sort(key=lambda item: -item[1].pttl / max(float(records[item[0]].get("keep", 1.0)) * 1000, 1.0))
        for rid, probe in dead:  # most recently dead first: it wins a shared identity
            source = _source(rid, probe.fields, registered[rid][1], probe.pttl, records[rid])
            if source is None:
                continue
            self.sources.append((rid, source.died_ago))
            for identity, field in source.fields.items():
                self._by_identity.setdefault(identity, (source, field))

    def match(self, key: Hashable, identity: bytes | None) -> Adopted | None:
        """The dead-run value for ``identity`` (and remember it as adopted for ``key``), or None."""
        if identity is None or identity == NO_IDENTITY:
            return None
        found = self._by_identity.get(identity)
        if found is None:
            return None
        source, field = found
        adopted = Adopted(source.run_id, field, source.parts.get(field, ()))
        self.adopted[key] = adopted
        return adopted

    def __call__(self, identities: Any) -> Collection[Hashable]:
        """The keys among ``identities`` (an ``Identities`` or a mapping key -> identity) with a dead run's value."""
        of: Mapping[Hashable, bytes] = getattr(identities, "of", identities)
        self.needed = len(of) + len(getattr(identities, "unstable", ()))
        self.load()
        if not self._by_identity:
            return ()
        return [key for key, identity in of.items() if self.match(key, identity) is not None]

    def report(self, remaining: int, needed: int | None = None) -> None:
        """Say what was reused: "resumed 205 of 400 tasks from run 3f2a... (died 12 s ago)" (``remaining``: the
        tasks the run still computes, of ``needed``, default the keys the lookup saw), on this module's logger at
        INFO, and on ``stderr`` if that is not shown."""
        if not self.adopted:
            return
        used = sorted({a.run_id for a in self.adopted.values()})
        ago = {rid: died for rid, died in self.sources}
        runs = ", ".join(f"run {rid} (died {ago.get(rid, 0.0):.0f} s ago)" for rid in used)
        needed = max(self.needed if needed is None else needed, remaining)
        message = f"resumed {needed - remaining} of {needed} tasks from {runs}"
        logger.info("manager: %s", message)
        if not logger.isEnabledFor(logging.INFO):  # nobody configured logging: a notebook user still sees it
            print(f"dask-redisparam: {message}", file=sys.stderr)


def _source(
    rid: str, fields: list[str], chunks: dict[int, bytes], pttl: int, record: Mapping[str, Any]
) -> _Source | None:
    """A dead run's values by identity, or None if it has none that can be attributed (parts of large values whose
    field cannot be told: written by another version of the workers)."""
    present: set[str] = set()
    parts: dict[str, list[str]] = {}
    for name in fields:
        if not name.startswith("~"):
            present.add(name)
            continue
        owner, sep, _ = name[1:].partition("-")
        if not sep or not owner.isdigit():
            return None
        parts.setdefault(owner, []).append(name)
    by_identity: dict[bytes, str] = {}
    for first, ids in chunks.items():
        for n in range(len(ids) // IDENTITY_BYTES):
            field = str(first + n)
            identity = ids[n * IDENTITY_BYTES : (n + 1) * IDENTITY_BYTES]
            if field in present and identity != NO_IDENTITY:
                by_identity.setdefault(identity, field)
    if not by_identity:
        return None
    keep = float(record.get("keep", 0.0) or 0.0)
    died_ago = max(0.0, keep - pttl / 1000) if keep else 0.0
    return _Source(rid, died_ago, by_identity, {f: tuple(names) for f, names in parts.items()})


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One unended run of a job, for operators (``dask-redisparam runs``).

    Attributes
    ----------
    run_id : str
        The run.
    age : float
        Seconds since it started.
    manager : str
        ``host:pid`` of its manager.
    done, total : int
        Tasks finished and tasks of the run (as its manager last wrote them).
    nbytes : int
        Bytes its values take in Redis.
    alive : bool
        Its manager lives (its lease is renewed).
    resumable : bool
        Dead with values that a later compute can find by identity.
    died_ago : float
        Seconds since its manager's last renewal (0 for a live run).
    """

    run_id: str
    age: float
    manager: str
    done: int
    total: int
    nbytes: int
    alive: bool
    resumable: bool
    died_ago: float


def list_runs(backend: Backend, jobname: str) -> list[RunInfo]:
    """The job's registered runs (live, and dead ones whose values are kept), oldest first (three round trips)."""
    registered = backend.registered_runs(jobname)
    if not registered:
        return []
    rids = sorted(registered)
    probes = backend.probe_runs(jobname, rids)
    sizes = backend.run_bytes(jobname, rids)
    now = time.time()
    out = []
    for rid in rids:
        raw, chunks, progress = registered[rid]
        try:
            record = dict(json.loads(raw))
        except (ValueError, TypeError):
            record = {}
        probe = probes[rid]
        alive = probe.alive and not manager_gone(record)
        source = None if alive or probe.pttl < 0 else _source(rid, probe.fields, chunks, probe.pttl, record)
        done, _, total = progress.partition(" ")
        out.append(
            RunInfo(
                rid,
                now - float(record.get("started", now)),
                f"{record.get('host', '?')}:{record.get('pid', '?')}",
                int(done) if done.isdigit() else 0,
                int(total) if total.isdigit() else int(record.get("tasks", 0)),
                sizes.get(rid, 0),
                alive,
                source is not None,
                0.0 if alive or source is None else source.died_ago,
            )
        )
    return sorted(out, key=lambda info: -info.age)

"""The Redis side of resume: the job's registry of unended runs, their task identities, and their kept values.

Every run with resume on (``resume_ttl > 0``) registers in the job's ``runs`` hash (:func:`.keys.runs`) when it
opens: field ``<rid>`` holds a small record of its manager (JSON: host, pid, process start, start time, tasks,
the TTL of its values), fields ``<rid>.ids.<first>`` its tasks' 16-byte identities in field order from field
``first`` on (a stream adds chunks as it adds tasks), and ``<rid>.done`` its progress (tasks done and total),
written by the manager's turns. The hash lives as long as the longest ``resume_ttl`` of its runs (renewed by
their leases, never shortened); a clean end removes the run's fields, and readers prune those of runs whose
values are gone.

A later run of the job reads the registry in one round trip (:meth:`ResumeOps.registered_runs`), asks which
runs are alive and which of their fields still hold values in a second (:meth:`ResumeOps.probe_runs`), and copies
the values it reuses into its own data hash inside Redis (:meth:`ResumeOps.copy_from_runs`).

Examples
--------
>>> from dask_redisparam.backend import Backend
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.open_run("doc-job", "r1", 4.0, {"0": b"||v"}, record=b"{}", ids=b"i" * 16, resume_keep=60.0)
...     sorted(backend.registered_runs("doc-job")["r1"][1])
...     backend.close_run("doc-job", "r1")
...     backend.registered_runs("doc-job")
...     backend.close()
[0]
{}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

from . import keys
from .client import evalsha
from .runs import RunOps

__all__ = ["Probe", "ResumeOps", "ids_field", "progress_field"]


def ids_field(run_id: str, first: int) -> str:
    """The registry field of a run's identities from field ``first`` on.

    Examples
    --------
    >>> ids_field("r1", 0)
    'r1.ids.0'
    """
    return f"{run_id}.ids.{first}"


def progress_field(run_id: str) -> str:
    """The registry field of a run's progress: ``"<done> <total>"``."""
    return f"{run_id}.done"


class Probe(NamedTuple):
    """What :meth:`ResumeOps.probe_runs` found of one registered run."""

    alive: bool
    """Its ``alive`` key exists (False for a run of ``kill``: its key was just deleted)."""
    pttl: int
    """Milliseconds its data hash has left (negative: no data hash)."""
    fields: list[str]
    """The fields of its data hash (values and parts of large values); none for a live run."""


class ResumeOps(RunOps):
    """The registry of a job's unended runs, the lookup of their values and the copies from them."""

    def registered_runs(self, jobname: str) -> dict[str, tuple[bytes, dict[int, bytes], str]]:
        """Every registered run: ``run id -> (record, {first field: identities from it}, progress)`` (one
        ``HGETALL``); identity chunks and progress of runs without a record are left out."""
        raw = cast(dict[bytes, bytes], self._r.hgetall(keys.runs(jobname)))
        records: dict[str, bytes] = {}
        chunks: dict[str, dict[int, bytes]] = {}
        progress: dict[str, str] = {}
        for name, value in raw.items():
            field = name.decode(errors="replace")
            rid, sep, rest = field.partition(".")
            if not sep:
                records[rid] = value
            elif rest == "done":
                progress[rid] = value.decode(errors="replace")
            elif rest.startswith("ids.") and rest[4:].isdigit():
                chunks.setdefault(rid, {})[int(rest[4:])] = value
        return {rid: (record, chunks.get(rid, {}), progress.get(rid, "")) for rid, record in records.items()}

    def probe_runs(self, jobname: str, run_ids: Sequence[str], kill: Iterable[str] = ()) -> dict[str, Probe]:
        """Which of ``run_ids`` are alive, how long their values have left and, for the dead ones, which fields
        they hold (one script, one round trip). Runs in ``kill`` are declared dead: their ``alive`` key is deleted
        (their manager is known to be gone), so that workers drop their messages at once."""
        if not run_ids:
            return {}
        killed = set(kill)
        run_keys = [k for rid in run_ids for k in (keys.alive(jobname, rid), keys.data(jobname, rid))]
        flags = ["1" if rid in killed else "0" for rid in run_ids]
        replies = self._execute(lambda pipe: evalsha(pipe, self._probe, run_keys, flags))[0]
        out = {}
        for rid, (alive, pttl, fields) in zip(run_ids, replies, strict=True):
            out[rid] = Probe(bool(alive), int(pttl), [f.decode(errors="replace") for f in fields])
        return out

    def forget_runs(self, jobname: str, run_ids: Iterable[str]) -> None:
        """Remove the registry entries of runs (stale: their values are gone) and whatever keys they left."""
        for rid in run_ids:
            self.close_run(jobname, rid)

    def copy_from_runs(self, jobname: str, run_id: str, sources: dict[str, dict[str, str]]) -> dict[str, int]:
        """Copy values (new field -> field there) from the data hashes of other runs of the job into the data hash
        of ``run_id``, inside Redis, in one round trip; returns how many fields of each source existed."""
        order = [rid for rid, fields in sources.items() if fields]

        def build(pipe: Any) -> None:
            for rid in order:
                args = [x for new, old in sources[rid].items() for x in (new, old)]
                evalsha(pipe, self._copy, [keys.data(jobname, rid), keys.data(jobname, run_id)], args)

        replies = self._execute(build) if order else []
        return {rid: int(n) for rid, n in zip(order, replies, strict=True)}

    def keep_for_resume(self, jobname: str, run_id: str, keep: float, progress: str = "") -> bool:
        """A run ends without finishing (its manager is interrupted): mark it dead, keep its values ``keep``
        seconds for a later resume, with its last ``progress`` (``"<done> <total>"``) in the registry; False (and
        nothing kept) if it held no values."""
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(keys.alive(jobname, run_id), keys.done(jobname, run_id))
        pipe.hkeys(keys.data(jobname, run_id))
        pipe.pexpire(keys.data(jobname, run_id), int(keep * 1000))
        pipe.hexists(keys.runs(jobname), run_id)
        replies = pipe.execute()
        if len(replies[1]) > 1:  # more than the marker field
            if progress and replies[3]:  # never re-create the registry (it has a TTL)
                self._r.hset(keys.runs(jobname), progress_field(run_id), progress)
            return True
        self.close_run(jobname, run_id)
        return False

    def run_bytes(self, jobname: str, run_ids: Sequence[str]) -> dict[str, int]:
        """Bytes each run's data hash takes in the server's memory (``MEMORY USAGE``, every field counted)."""
        pipe = self._r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.memory_usage(keys.data(jobname, rid), samples=0)
        return {rid: int(n or 0) for rid, n in zip(run_ids, pipe.execute(), strict=True)}

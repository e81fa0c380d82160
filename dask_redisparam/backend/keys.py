"""Every Redis key name that dask-redisparam uses, as pure functions.

All keys of a job live under ``drp:{<jobname>}:``; the braces are a Redis Cluster hash tag, so one job's keys
sit on one slot and Lua scripts may touch several of them. ``SCAN MATCH drp:{<jobname>}:*`` finds a whole
job (:func:`job_pattern`), ``drp:{<jobname>}:run:<run_id>:*`` a whole run (:func:`run_pattern`).

=============================================  =======  =====================================================
key                                             type     meaning
=============================================  =======  =====================================================
``drp:{job}:queue``                             LIST     task messages waiting for any worker of the job
``drp:{job}:workers``                           SET      ids of the workers that registered on the job
``drp:{job}:dead``                              LIST     task messages workers refused (not unpickled), last 100
``drp:{job}:rejected``                          HASH     the last rejection (reason, worker, time) and a count
``drp:{job}:worker:<wid>``                      HASH     a worker's registration; its TTL is the lease
``drp:{job}:worker:<wid>:proc``                 LIST     messages a worker claimed (reliable dequeue)
``drp:{job}:worker:<wid>:control``              LIST     control messages for one worker (e.g. stop)
``drp:{job}:run:<rid>:alive``                   STRING   exists while the run's manager lives (TTL)
``drp:{job}:run:<rid>:data``                    HASH     results and uploaded literals, one field each (and ``@run``)
``drp:{job}:run:<rid>:done``                    LIST     completion records for the run's manager
``drp:{job}:runs``                              HASH     unended runs: record, task identities, progress (resume)
``drp:{job}:redo:<rid>``                        HASH     a failed run's values, kept ``redo_ttl`` for ``redo=``
``drp:{job}:probe:<token>``                     STRING   the start-up check of the ACL's commands (deleted at once)
=============================================  =======  =====================================================

Examples
--------
>>> queue("demo")
'drp:{demo}:queue'
>>> data("demo", "r1")
'drp:{demo}:run:r1:data'
"""

from __future__ import annotations

__all__ = [
    "PREFIX",
    "alive",
    "control",
    "dead",
    "data",
    "done",
    "job_pattern",
    "probe",
    "processing",
    "queue",
    "redo",
    "rejected",
    "run_id_of",
    "run_pattern",
    "runs",
    "runs_pattern",
    "worker",
    "workers",
]

PREFIX = "drp"


def _job(jobname: str) -> str:
    return f"{PREFIX}:{{{jobname}}}"


def job_pattern(jobname: str) -> str:
    """SCAN pattern of every key of a job."""
    return f"{_job(jobname)}:*"


def queue(jobname: str) -> str:
    """The job's shared queue of task messages."""
    return f"{_job(jobname)}:queue"


def workers(jobname: str) -> str:
    """The set of worker ids registered on the job."""
    return f"{_job(jobname)}:workers"


def worker(jobname: str, worker_id: str) -> str:
    """A worker's registration hash; it expires when the worker stops heart-beating."""
    return f"{_job(jobname)}:worker:{worker_id}"


def dead(jobname: str) -> str:
    """Task messages that workers refused (never unpickled: a failed signature check, not a task message, another
    protocol version), newest first, the last 100."""
    return f"{_job(jobname)}:dead"


def rejected(jobname: str) -> str:
    """The last rejection of a task message by a worker of the job (reason, worker, time) and how many there
    were; it expires with the dead-letter list.

    Examples
    --------
    >>> rejected("demo")
    'drp:{demo}:rejected'
    """
    return f"{_job(jobname)}:rejected"


def processing(jobname: str, worker_id: str) -> str:
    """The list of messages a worker has claimed and not yet completed."""
    return f"{_job(jobname)}:worker:{worker_id}:proc"


def control(jobname: str, worker_id: str) -> str:
    """The list of control messages addressed to one worker."""
    return f"{_job(jobname)}:worker:{worker_id}:control"


def _run(jobname: str, run_id: str) -> str:
    return f"{_job(jobname)}:run:{run_id}"


def redo(jobname: str, run_id: str) -> str:
    """A failed run's stored values, kept (with a TTL) so that ``redo=`` can reuse them."""
    return f"{_job(jobname)}:redo:{run_id}"


def run_pattern(jobname: str, run_id: str) -> str:
    """SCAN pattern of every key of one run."""
    return f"{_run(jobname, run_id)}:*"


def runs_pattern(jobname: str) -> str:
    """SCAN pattern of every key of every run of a job."""
    return f"{_job(jobname)}:run:*"


def run_id_of(key: str) -> str | None:
    """The run id in a run key's name, or None for a key that is not a run key.

    Examples
    --------
    >>> run_id_of(done("demo", "r1")), run_id_of(queue("demo"))
    ('r1', None)
    """
    head, sep, rest = key.partition("}:run:")
    return rest.split(":", 1)[0] if sep and head.startswith(f"{PREFIX}:{{") else None


def alive(jobname: str, run_id: str) -> str:
    """Exists (with a TTL the manager renews) while the run is live; workers drop results of dead runs."""
    return f"{_run(jobname, run_id)}:alive"


def data(jobname: str, run_id: str) -> str:
    """The run's hash of stored values (task results and uploaded literals)."""
    return f"{_run(jobname, run_id)}:data"


def done(jobname: str, run_id: str) -> str:
    """The list of completion records that workers push for the run's manager."""
    return f"{_run(jobname, run_id)}:done"


def probe(jobname: str, token: str) -> str:
    """The scratch key of one start-up check of the user's commands (:mod:`dask_redisparam.backend.commands`)."""
    return f"{_job(jobname)}:probe:{token}"


def runs(jobname: str) -> str:
    """The job's registry of runs that have not ended cleanly: for each, a small record of its manager (host, pid,
    start time, number of tasks), its task identities and its progress (:mod:`dask_redisparam.backend.resume`);
    entries of runs whose values are gone are stale (readers prune them).

    Examples
    --------
    >>> runs("demo")
    'drp:{demo}:runs'
    """
    return f"{_job(jobname)}:runs"

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
``drp:{job}:run:<rid>:progress``                HASH     tasks per prefix of a run: total, done, failed
``drp:{job}:metrics``                           HASH     the job's counters (tasks, losses, retries, durations)
``drp:{job}:events``                            STREAM   one entry per completed message, for the task stream
``drp:{job}:held:<token>``                      HASH     values a process persisted, kept while it holds them (TTL)
``drp:{job}:dataset:<name>:values``             HASH     a published dataset's values (and their parts)
``drp:{job}:dataset:<name>:meta``               HASH     a published dataset's description (sealed collection)
``drp:{job}:rqueue:<class>``                    LIST     task messages that need the resources of ``<class>``
``drp:{job}:rclasses``                          HASH     resource classes of live runs (``<class>|<run_id>``)
``drp:{job}:daemon:<did>``                      HASH     a worker daemon's resources in use (``use|<R>``), ``cap|<R>``
``drp:{job}:worker:<wid>:claim``                HASH     the resource message a worker holds: class, daemon, head
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
    "claim",
    "control",
    "daemon",
    "dataset_meta",
    "dataset_name_of",
    "dataset_values",
    "datasets_pattern",
    "dead",
    "data",
    "done",
    "events",
    "jobname_of",
    "metrics",
    "progress",
    "statistics",
    "held",
    "job_pattern",
    "probe",
    "processing",
    "queue",
    "redo",
    "rejected",
    "resource_classes",
    "rqueue",
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


def rqueue(jobname: str, resource_class: str) -> str:
    """The queue of task messages whose tasks need the resources of ``resource_class`` (its canonical text,
    :func:`dask_redisparam.wire.resources.class_name`): only workers whose daemon covers them claim from it.

    Examples
    --------
    >>> rqueue("demo", "GPU=1.0")
    'drp:{demo}:rqueue:GPU=1.0'
    """
    return f"{_job(jobname)}:rqueue:{resource_class}"


def resource_classes(jobname: str) -> str:
    """The resource classes that live runs of the job queue messages for: fields ``<class>|<run_id>``, set by
    each turn of a run's manager (with the run's lease as the hash's TTL) and deleted when the run closes; workers
    with resources read them to know which queues to look at.

    Examples
    --------
    >>> resource_classes("demo")
    'drp:{demo}:rclasses'
    """
    return f"{_job(jobname)}:rclasses"


def daemon(jobname: str, daemon_id: str) -> str:
    """What one worker daemon (the processes of one ``dask-redisparam-worker``) has and uses of its resources:
    ``cap|<name>`` and ``use|<name>``, kept by the claim scripts; it goes away when nothing is in use.

    Examples
    --------
    >>> daemon("demo", "ab12")
    'drp:{demo}:daemon:ab12'
    """
    return f"{_job(jobname)}:daemon:{daemon_id}"


def claim(jobname: str, worker_id: str) -> str:
    """The resource message a worker holds (``class``, ``daemon``, ``head``: the message's header), so that
    completing, deregistering or reaping the worker frees its daemon's resources and sends the message back to
    its own queue.

    Examples
    --------
    >>> claim("demo", "w1")
    'drp:{demo}:worker:w1:claim'
    """
    return f"{_job(jobname)}:worker:{worker_id}:claim"


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


def progress(jobname: str, run_id: str) -> str:
    """A run's tasks per key prefix: ``total|<prefix>`` (written by its manager), ``done|<prefix>`` and
    ``failed|<prefix>`` (counted by the completion script); it lives as long as the run's lease.

    Examples
    --------
    >>> progress("demo", "r1")
    'drp:{demo}:run:r1:progress'
    """
    return f"{_run(jobname, run_id)}:progress"


def metrics(jobname: str) -> str:
    """The job's counters for Prometheus, kept in Redis where the facts happen (the completion script, the reaper,
    the manager's retries): they survive the dashboard and the runs, and expire a week after the last count.

    Examples
    --------
    >>> metrics("demo")
    'drp:{demo}:metrics'
    """
    return f"{_job(jobname)}:metrics"


def events(jobname: str) -> str:
    """The job's stream of task events: one entry per completed message (its worker, run and, per key prefix,
    the first start, the last end and the counts), capped and expiring, for the dashboard's task stream.

    Examples
    --------
    >>> events("demo")
    'drp:{demo}:events'
    """
    return f"{_job(jobname)}:events"


def statistics(jobname: str) -> set[str]:
    """The keys a job keeps, with a TTL, after its runs ended and its workers stopped: its counters and its
    task events (see :func:`metrics`, :func:`events`).

    Examples
    --------
    >>> sorted(statistics("demo"))
    ['drp:{demo}:events', 'drp:{demo}:metrics']
    """
    return {metrics(jobname), events(jobname)}


def jobname_of(key: str) -> str | None:
    """The job name in a key's name, or None for a key that is not one of ours.

    Examples
    --------
    >>> jobname_of(queue("demo")), jobname_of("other:key")
    ('demo', None)
    """
    if not key.startswith(f"{PREFIX}:{{"):
        return None
    end = key.find("}:", len(PREFIX) + 2)
    return key[len(PREFIX) + 2 : end] if end > 0 else None


def held(jobname: str, token: str) -> str:
    """The values that one persist of a manager process keeps in Redis (a run's data hash, trimmed and renamed);
    its TTL is the holding process's lease.

    Examples
    --------
    >>> held("demo", "ab12")
    'drp:{demo}:held:ab12'
    """
    return f"{_job(jobname)}:held:{token}"


def dataset_values(jobname: str, name: str) -> str:
    """The hash of a published dataset's values (fields as in the run that computed them, and their parts).

    Examples
    --------
    >>> dataset_values("demo", "table")
    'drp:{demo}:dataset:table:values'
    """
    return f"{_job(jobname)}:dataset:{name}:values"


def dataset_meta(jobname: str, name: str) -> str:
    """The hash that describes a published dataset: the sealed collection that refers to its values, its size,
    type and time of publication."""
    return f"{_job(jobname)}:dataset:{name}:meta"


def datasets_pattern(jobname: str) -> str:
    """SCAN pattern of the description keys of every dataset of a job (names never hold ``:`` or glob signs)."""
    return f"{_job(jobname)}:dataset:*:meta"


def dataset_name_of(key: str) -> str | None:
    """The dataset name in a description key's name, or None for another key.

    Examples
    --------
    >>> dataset_name_of(dataset_meta("demo", "table")), dataset_name_of(queue("demo"))
    ('table', None)
    """
    head, sep, rest = key.partition("}:dataset:")
    if not sep or not head.startswith(f"{PREFIX}:{{") or not rest.endswith(":meta"):
        return None
    return rest[: -len(":meta")]


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

"""The settings of one run, and the small records the manager keeps and hands out.

:class:`RunOptions` is what :class:`~dask_redisparam.param.RedisParam` decides for one run and passes to the
manager; :class:`StoredResult`, :class:`TimelineRecord` and :class:`RedoInfo` describe finished tasks;
:class:`Commands` is what the state machine (:mod:`dask_redisparam.manager.state`) asks its loop to do.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dask.config

from ..errors import ConfigurationError
from .timeline_store import Timeline, TimelineRecord

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..wire.signing import Signer
    from .resume import Resumer
    from .state import RunState

__all__ = [
    "COMPUTE_KEYWORDS",
    "IGNORED_ANNOTATIONS",
    "NOT_EXPORTED",
    "Commands",
    "RedoInfo",
    "RunOptions",
    "StoredResult",
    "TimelineRecord",
    "exported_globals",
    "ignored_options",
    "redo_info_of",
]

COMPUTE_KEYWORDS = frozenset(
    {
        "callbacks",
        "fuse_chains",
        "redo",
        "resources",
        "retries",
        "return_exceptions",
        "return_results",
        "save_if",
        "timeout",
    }
)
"""The keywords of ``compute`` (dask passes the ones it does not take itself on to the scheduler's ``get``) that
a param reads: every other one has no effect and is warned about (:func:`ignored_options`). dask's own keywords,
``traverse``, ``optimize_graph`` and ``scheduler``, never reach the ``get``."""

IGNORED_ANNOTATIONS = {
    "workers": "any worker of the job may run any task (tasks cannot be pinned to workers)",
    "allow_other_workers": "any worker of the job may run any task (tasks cannot be pinned to workers)",
}
"""Annotations of dask.distributed that mean nothing here, and why; ``retries``, ``priority`` and ``resources``
are honoured, other annotations are the user's own and are left alone."""

_IGNORED_KEYWORDS = {
    "num_workers": "the pool's size is the workers that serve the job (the workers setting, or start more)",
    "workers": "any worker of the job may run any task (tasks cannot be pinned to workers)",
    "allow_other_workers": "any worker of the job may run any task (tasks cannot be pinned to workers)",
    "priority": "give priorities with dask.annotate(priority=...)",
    "pool": "the tasks run in the job's worker processes, not in a local pool",
    "chunksize": "messages are batched by the manager (queue_multiplier, fuse_chains)",
}


def ignored_options(kwargs: Mapping[str, Any], annotations: Mapping[str, Mapping[Hashable, Any]]) -> list[str]:
    """What of a compute has no effect: its keywords that are not :data:`COMPUTE_KEYWORDS` and the annotations of
    :data:`IGNORED_ANNOTATIONS` that some task carries; each one described, with why.

    Examples
    --------
    >>> for item in ignored_options({"num_workers": 4, "retries": 1}, {"workers": {"x": "w1"}}):
    ...     print(item)
    annotation workers= (on 1 task): any worker of the job may run any task (tasks cannot be pinned to workers)
    keyword num_workers=4: the pool's size is the workers that serve the job (the workers setting, or start more)
    """
    found = []
    for name, reason in IGNORED_ANNOTATIONS.items():
        tasks = len(annotations.get(name) or {})
        if tasks:
            found.append(f"annotation {name}= (on {tasks} task{'s' if tasks > 1 else ''}): {reason}")
    for name, value in kwargs.items():
        if name not in COMPUTE_KEYWORDS:
            reason = _IGNORED_KEYWORDS.get(name, "not a keyword that dask-redisparam knows")
            shown = repr(value)
            found.append(f"keyword {name}={shown if len(shown) <= 40 else shown[:37] + '...'}: {reason}")
    return found


class StoredResult:
    """What the manager knows of a finished task's value: where it is, its size, who made it.

    Passed as ``result`` to ``posttask`` callbacks, since values stay in Redis.
    """

    __slots__ = ("key", "nbytes", "worker")

    def __init__(self, key: Hashable, nbytes: int, worker: str) -> None:
        self.key, self.nbytes, self.worker = key, nbytes, worker

    def __sizeof__(self) -> int:
        return self.nbytes

    def __repr__(self) -> str:
        return f"StoredResult({self.key!r}, nbytes={self.nbytes}, worker={self.worker!r})"


@dataclasses.dataclass(frozen=True)
class RedoInfo:
    """A failed run's kept values, for ``redo=``: the job, the run, each kept key's field in its redo hash, and the
    fields of the parts of large ones (by field)."""

    jobname: str
    run_id: str
    fields: dict[Hashable, str]
    rng_seed: int | None
    parts: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Commands:
    """What a run's state machine asks its loop to do against Redis, taken once per turn.

    Attributes
    ----------
    push : list of bytes
        Task messages to push to the job's queue (new ones, and ones a worker refused, again).
    release : list of str
        Fields of the run's data hash (values and their parts) to delete: nothing needs them any more.
    withdraw : list of bytes
        Messages to take back from the queue: given up on (their tasks failed with ``KilledWorker``).
    logs : list of (key, worker, TaskLog)
        Captured task logs to show (and append to ``logdir``): :func:`~dask_redisparam.logs.emit_task_log`.
    ask_live_workers : bool
        Ask Redis for the ids of the job's live workers and tell the state
        (:meth:`~dask_redisparam.manager.state.RunState.workers_seen`): every worker may be refusing the messages.
    """

    push: list[bytes]
    release: list[str]
    withdraw: list[bytes]
    logs: list[tuple[Hashable, str, Any]]
    ask_live_workers: bool = False


def _no_known_values(key: Hashable) -> Any:
    raise KeyError(key)


@dataclasses.dataclass
class RunOptions:
    """Settings of one run: built by :class:`~dask_redisparam.param.RedisParam` for each run from its
    :class:`~dask_redisparam.config.settings.Settings` (whose table holds the defaults) and the compute's arguments.

    Parameters
    ----------
    jobname : str
        The job whose queue and workers serve the run.
    queue_multiplier : float
        Messages in flight per live worker.
    stop_on_error : bool
        Stop at the first failing task.
    fuse_chains : bool
        Send a task's linear chain of dependents in the same message.
    allowed_failures : int
        How many workers may die running a message before its tasks fail with ``KilledWorker``.
    retries : int
        How often a task that raised runs again (``dask.annotate(retries=n)`` overrides it per task).
    timeout : float, optional
        Seconds each task may run.
    rng_seed : int, optional
        Seed of the per-task random streams (:mod:`dask_redisparam.rng`).
    redo : RedoInfo, optional
        Reuse the values a failed run kept; run only what failed or was not evaluated.
    redo_ttl : float
        Seconds a failed run keeps its values for ``redo`` (0: not kept).
    resume_ttl : float
        Seconds the values of a run that ends without finishing (its manager died or was interrupted) stay for a
        later resume (0: no resume; the run is not registered).
    resumer : Resumer, optional
        The values of dead runs this run reuses (:mod:`dask_redisparam.manager.resume`).
    return_exceptions : bool
        Return exceptions in place of failed or unevaluated results instead of raising.
    on_result : callable, optional
        ``on_result(key, value)`` is called for each requested key as soon as it is computed (its value is
        downloaded then, and dropped from Redis afterwards): streaming.
    load_known : callable, optional
        ``load_known(key)`` gives the value of a known key that is not in ``redo`` (a saved result).
    stream_all : bool
        ``on_result`` gets the value of every task as it is computed, not only of the requested ones (a
        ``resultdir`` that saves every task): each is kept in Redis until it was handed over.
    feed : callable, optional
        ``feed(run)`` is called every turn and may :meth:`RunState.add_task`; it returns False once it has no
        more tasks to add (the run ends when everything added is done).
    on_done : callable, optional
        ``on_done(run)`` is called every turn after the completion records were applied: the requested keys
        finished (:meth:`RunState.take_new_results`) and failed (:meth:`RunState.take_new_errors`) since the last
        turn. Nothing is downloaded: the values stay in Redis until :meth:`RunState.drop` (futures), and a failure
        is final at once (the tasks waiting for it fail with it).
    wait_seconds : float
        How long one turn blocks for completion records while messages are out (a feed that adds tasks at any
        time wants it short: they leave at the next turn).
    log_threshold : int, optional
        Capture each task's log records at or above this level and its output, and show them here.
    logdir : str, optional
        Also append each task's log to a file in this directory.
    exported : tuple of (dict, dict), optional
        The dask config and environment variables to apply on the workers while they unpickle and run the tasks.
    signer : Signer, optional
        Signs messages and uploaded values, checks records and results (:mod:`dask_redisparam.wire.signing`).
    describe_server : str
        ``host:port`` for messages.
    last_timeline : Timeline
        Filled by the manager when the run ends (for :meth:`RedisParam.timeline`): a sequence of TimelineRecord.
    replicas_required : tuple of (int, float), optional
        ``(replicas, replicas_timeout)`` with ``replicas_required=True``: the run fails unless that many replicas
        acknowledged its writes at its end (:func:`~dask_redisparam.manager.follow.confirm_replicated`).
    """

    jobname: str
    _: dataclasses.KW_ONLY
    queue_multiplier: float
    stop_on_error: bool
    fuse_chains: bool
    allowed_failures: int
    retries: int
    timeout: float | None
    rng_seed: int | None
    redo: RedoInfo | None
    redo_ttl: float
    return_exceptions: bool
    log_threshold: int | None
    logdir: str | None
    exported: tuple[dict[str, Any], dict[str, str]] | None
    signer: Signer | None
    describe_server: str
    resume_ttl: float = 0.0
    resumer: Resumer | None = None
    on_result: Callable[[Hashable, Any], None] | None = None
    load_known: Callable[[Hashable], Any] = _no_known_values
    stream_all: bool = False
    feed: Callable[[RunState], bool] | None = None
    on_done: Callable[[RunState], None] | None = None
    wait_seconds: float = 1.0
    last_timeline: Timeline = dataclasses.field(default_factory=Timeline)  # filled when the run ends
    replicas_required: tuple[int, float] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        kwargs: dict[str, Any] | None = None,
        *,
        redo: RedoInfo | None = None,
        signer: Signer | None = None,
        describe_server: str = "(no server)",
        **extra: Any,
    ) -> RunOptions:
        """The options of one run of a param with ``settings``, and the compute's keyword arguments ``kwargs``
        (``fuse_chains``, ``retries``, ``timeout``, ``return_exceptions``: ``retries`` and ``timeout`` override the
        settings for this run, validated as they are); ``extra`` sets the streaming fields (``on_result``,
        ``load_known``, ``stream_all``, ``feed``, ``on_done``, ``wait_seconds``) or overrides a setting
        (``stop_on_error``, ...).

        Examples
        --------
        >>> from dask_redisparam.config.settings import Settings
        >>> options = RunOptions.from_settings(Settings(jobname="job", environ={}), {"retries": 2, "timeout": 5})
        >>> options.jobname, options.retries, options.timeout, options.allowed_failures, options.fuse_chains
        ('job', 2, 5.0, 3, True)
        >>> RunOptions.from_settings(Settings(jobname="job", environ={}), {"timeout": -1})
        Traceback (most recent call last):
        ...
        dask_redisparam.errors.ConfigurationError: timeout=-1 must be a number > 0
        """
        from ..config.schema import setting

        kwargs = {} if kwargs is None else kwargs
        timeout = settings.timeout
        if "timeout" in kwargs:
            timeout = setting("timeout").check("timeout", kwargs["timeout"], {})
        retries = settings.retries
        if "retries" in kwargs:
            retries = setting("retries").check("retries", kwargs["retries"], {})
        fields: dict[str, Any] = dict(
            queue_multiplier=settings.queue_multiplier,
            stop_on_error=settings.stop_on_error,
            fuse_chains=bool(kwargs.get("fuse_chains", True)),
            allowed_failures=settings.allowed_failures,
            retries=retries,
            timeout=timeout,
            rng_seed=settings.rng_seed,
            redo=redo,
            redo_ttl=settings.redo_ttl,
            resume_ttl=settings.resume_ttl,
            return_exceptions=bool(kwargs.get("return_exceptions", False)),
            log_threshold=settings.threshold_level if settings.log else None,
            logdir=settings.logdir,
            exported=exported_globals(settings.export_env) if settings.exportglobals else None,
            signer=signer,
            describe_server=describe_server,
            replicas_required=(settings.replicas, settings.replicas_timeout)
            if settings.replicas and settings.replicas_required
            else None,
        )
        return cls(settings.jobname, **{**fields, **extra})


NOT_EXPORTED = ("scheduler", "redisparam")
"""Top-level dask config keys never exported: the scheduler object, and dask-redisparam's own settings (the
manager's server address, password, TLS files and signing secret among them: none of them is for a worker, whose
own settings come from its own environment, and messages must not carry secrets)."""


def exported_globals(export_env: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The dask config (what can be pickled, and not :data:`NOT_EXPORTED`) and listed environment variables.

    Examples
    --------
    >>> with dask.config.set({"redisparam.password": "hunter2", "drp-doc.answer": 42}):
    ...     config, env = exported_globals([])
    >>> "redisparam" in config, config["drp-doc"]
    (False, {'answer': 42})
    """
    config = {}
    for name, value in dask.config.config.items():
        if name in NOT_EXPORTED:
            continue
        try:
            pickle.dumps(value)
        except Exception:  # not for the workers: a setting that only makes sense in this process
            continue
        config[name] = value
    env = {name: os.environ[name] for name in export_env if name in os.environ}
    return config, env


def redo_info_of(redo: Any, jobname: str) -> RedoInfo | None:
    """The kept values behind ``redo=`` (an exception of a failed run, or its ``redo`` attribute)."""
    if redo is None:
        return None
    info = redo if isinstance(redo, RedoInfo) else getattr(redo, "redo", None)
    if not isinstance(info, RedoInfo):
        raise ConfigurationError(
            f"redo={type(redo).__name__!r} holds nothing to redo: pass the exception a failed compute raised "
            "(with redo_ttl > 0, its values are kept for redo)"
        )
    if info.jobname != jobname:
        raise ConfigurationError(f"redo= comes from job {info.jobname!r}; this param serves job {jobname!r}")
    return info

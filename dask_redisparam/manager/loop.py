"""The manager's loop: drive a :class:`~dask_redisparam.manager.state.RunState` against Redis until the run ends.

The state machine does no I/O: this loop feeds it events (records read, worker counts, withdrawn messages) and
carries out its :class:`~dask_redisparam.manager.options.Commands` (push, delete, withdraw, show task logs), and
downloads the requested values. Each turn of :func:`run_graph`'s loop is one round trip (:meth:`Backend.exchange`):
acknowledge the completion records of the last turn, push new messages, delete released values, renew the run's
``alive`` key and read new records; it blocks (up to a second) only when nothing came back. About once a second it
also counts the live workers (the window follows them) and reaps dead ones: what a dead worker held goes back to
the queue. The run's lease (:data:`RUN_TTL`) is also renewed by a thread of its own
(:class:`~dask_redisparam.manager.lease.RunLease`), so a
loop that is busy or blocked for seconds keeps its run.

Faults:

- a lost connection or a restarting server: the turn is repeated with a bounded backoff; every step of a turn
  may be repeated safely (records are removed only once acknowledged, by an idempotent script). After
  ``OUTAGE_GRACE`` seconds without Redis the run fails with :class:`~dask_redisparam.errors.ServerUnavailable`;
- the run's keys vanished (a server restarted without persistence, or its lease lapsed):
  :class:`~dask_redisparam.errors.RunLost`; but after a Sentinel failover the run is opened again and what the
  failover lost runs again (:mod:`dask_redisparam.manager.follow`);
- the server loads its dataset (``LOADING``): waited through as a lost connection, then
  :class:`~dask_redisparam.errors.ServerLoading`;
- the server is full (``OOM``, also when a worker could not store results): the run fails with
  :class:`~dask_redisparam.errors.ServerOutOfMemory` and keeps nothing for ``redo=``;
- any exception in the manager, ``KeyboardInterrupt`` included: the run's queued messages are withdrawn and its
  keys deleted; results of tasks still running are dropped by the workers' completion script.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from typing import Any

from dask.callbacks import local_callbacks

from ..backend import TRANSIENT_ERRORS, Backend
from ..backend.resume import ids_field, progress_field
from ..backend.stats import progress_totals, task_prefix
from ..errors import RunLost, ServerLoading, ServerOutOfMemory, ServerUnavailable, StreamStopped
from ..logs import emit_task_log
from ..wire.bulk import open_values, triage
from ..wire.protocol import lost_notices
from ..wire.signing import PayloadRejected, Signer
from .collector import FREEZE_TASKS, GC_THRESHOLD, fewer_collections, freeze_long_lived
from .follow import FailoverWatch, finish_run
from .graph import Graph
from .identity import Identities
from .lease import RUN_TTL, RunLease
from .options import Commands, RunOptions
from .resources import daemons_of
from .resume import identity_bytes, manager_record
from .state import RunState

__all__ = [
    "GC_THRESHOLD",
    "OUTAGE_GRACE",
    "RUN_TTL",
    "WAIT_WARNING",
    "StreamStopped",
    "download_results",
    "fetch_stored",
    "fewer_collections",
    "freeze_long_lived",
    "run_graph",
    "run_loop",
]

logger = logging.getLogger(__name__)

WAIT_WARNING = 10.0
"""Seconds between warnings while no worker serves the job."""
DRAIN_SECONDS = 10.0
"""After a failure with ``stop_on_error``, seconds to wait for tasks already running (their results are kept)."""
FETCH_FIELDS = 65_536
"""Values downloaded per round trip at the end of a run (one ``HMGET`` each): a run of millions of tasks would
otherwise hold every stored value twice at once, as Redis's reply and as values."""
OUTAGE_GRACE = 30.0
"""Seconds the manager keeps trying to reach a Redis server that went away before it gives up."""


def run_graph(
    backend: Backend,
    graph: Graph,
    options: RunOptions,
    *,
    callbacks: Any = None,
    live_workers: Callable[[], int] | None = None,
    finish: Callable[[Backend, RunState], dict[Hashable, Any]] | None = None,
) -> dict[Hashable, Any]:
    """Run ``graph`` through Redis and return ``{requested key: value}``.

    Parameters
    ----------
    backend : Backend
        The connection to the server.
    graph : Graph
        From :func:`dask_redisparam.manager.graph.prepare_graph`.
    options : RunOptions
        Job name, window and error policy.
    callbacks : optional
        dask ``Callback`` objects or 5-tuples; default: the active ones (``with ProgressBar(): ...``).
    live_workers : callable, optional
        Returns the number of live workers; default asks Redis (at most once per second) and reaps dead ones.
    finish : callable, optional
        ``finish(backend, run)`` makes what the run returns once its tasks are done; default downloads the requested
        values (:func:`download`). :func:`~dask_redisparam.manager.hold.keep_values` keeps them in Redis instead.

    Raises
    ------
    Exception
        The first exception a task raised, with its original type, also a ``RemoteError``.
    SerializationError
        A task cannot be pickled.
    KilledWorker, TaskTimeout, RunLost, ServerUnavailable
        See :mod:`dask_redisparam.errors`.
    """
    count_workers = live_workers or (lambda: count_and_reap(backend, options.jobname, options.signer))
    resume_keep = options.resume_ttl
    keep = max(options.redo_ttl, resume_keep)
    with local_callbacks(callbacks) as cbs:
        run = RunState(graph, options, cbs)
        for cb in run.start_cbs:
            cb(graph.nodes)
        ending = "crash"  # until known better: "clean", "errors" (tasks failed: kept for redo=), "oom"
        follow = backend.address.kind == "sentinel"  # a failover may lose the run's keys: the loop opens it again
        lease = RunLease(
            backend.address, run.job, run.run_id, keep=keep, resume_keep=resume_keep, follow_failover=follow
        )
        try:
            uploads, parts, copies = run.start({key: options.load_known(key) for key in run.known_to_load()})
            for cb in run.start_state_cbs:
                cb(graph.nodes, run.state)
            freeze_long_lived()  # the graph and the run's state, built: they live until the end
            registration: dict[str, Any] = {}
            if resume_keep > 0:
                registration = {
                    "record": manager_record(len(graph.nodes), lease.keep),
                    "ids": identity_bytes(run.keys_by_idx, graph_identities(graph)),
                }
            progress = _progress_totals(graph.nodes, run.state["finished"])
            backend.open_run(
                run.job,
                run.run_id,
                RUN_TTL,
                uploads,
                parts,
                keep=lease.keep,
                resume_keep=resume_keep,
                progress=progress,
                **registration,
            )
            registration.clear()
            if options.rng_seed is None:  # registered: only a seeded run's messages need them (~100 bytes a task)
                graph.identities = Identities(unstable=graph.identities.unstable)
            lease.start()
            adoptions = run.take_adoptions()
            if copies or adoptions:
                if copies:
                    _copy_redo_values(backend, run, copies)
                if adoptions:
                    _copy_adopted(backend, run, adoptions)
                backend.renew_run(run.job, run.run_id, RUN_TTL, lease.keep)  # the copies' hash gets its TTL now
            watch = FailoverWatch.of(backend, run, lease)
            early: dict[Hashable, Any] | None = None
            if finish is None and not run.streaming:  # the requested values are downloaded as they are made
                early, run.collect_results = {}, True
            loop_args = (backend, run, count_workers, lease, watch, early)
            run_loop(*loop_args)
            result = finish_run(backend, run, _finisher(finish, early), lambda: run_loop(*loop_args), watch)
            ending = "errors" if run.errors else "clean"
            full = next((e for e in run.errors.values() if isinstance(e, ServerOutOfMemory)), None)
            if full is not None:  # a worker could not store results
                raise full
            return run.outcome(result)
        except StreamStopped:
            ending = "clean"
            raise
        except ServerOutOfMemory as e:  # kept for redo= or resume, the values would keep the server full
            ending = "oom"
            raise ServerOutOfMemory(
                f"{e}. Run {run.run_id} of job {run.job!r} failed, and nothing of it is kept for redo= or for resume "
                "(its values were deleted, so that they do not keep the server full)"
            ) from None
        finally:
            lease.stop()
            options.last_timeline.take(run.timeline)
            close_run(backend, run, ending=ending, keep=lease.keep)
            for cb in run.finish_cbs:
                cb(graph.nodes, run.state, ending != "clean")


def graph_identities(graph: Graph) -> Mapping[Hashable, bytes]:
    """The stable identities of the graph's keys (empty if the graph has none; not a copy)."""
    identities = getattr(graph, "identities", None)
    return getattr(identities, "of", None) or {}


def _progress_totals(nodes: Iterable[Hashable], finished: Container[Hashable]) -> dict[str, int]:
    """Tasks to run per key prefix (:func:`~dask_redisparam.backend.stats.progress_totals`); a tuple key's prefix
    is its name's, so ``key_split`` runs once per name, not once per key."""
    names = collections.Counter(
        key[0] if isinstance(key, tuple) and key else key for key in nodes if key not in finished
    )
    counts: collections.Counter[str] = collections.Counter()
    for name, n in names.items():
        counts[task_prefix(name)] += n
    return progress_totals(counts)


def _copy_redo_values(backend: Backend, run: RunState, copies: dict[str, str]) -> None:
    redo = run.options.redo
    assert redo is not None
    found = backend.copy_from_redo(run.job, redo.run_id, run.run_id, copies)
    if found < len(copies):
        raise RunLost(
            f"the values kept for redo by run {redo.run_id} of job {redo.jobname!r} are gone from Redis "
            "(redo_ttl passed, or the server restarted): compute again without redo="
        )


def download_results(backend: Backend, run: RunState) -> dict[Hashable, Any]:
    """The values of the run's requested keys (the default end of a run)."""
    return download(backend, run, run.result_keys())


def _copy_adopted(backend: Backend, run: RunState, adoptions: dict[str, dict[str, str]]) -> set[str]:
    """Copy values left by dead runs into the run's data hash; raise :class:`RunLost` if some vanished meanwhile
    (before the run started), else return the fields missing (added tasks: they run)."""
    found = backend.copy_from_runs(run.job, run.run_id, adoptions)
    missing = {rid for rid, fields in adoptions.items() if found.get(rid, 0) < len(fields)}
    if missing and not run.to_adopt:
        raise RunLost(
            f"the values of dead run(s) {', '.join(sorted(missing))} of job {run.job!r} that this run resumes from "
            "vanished from Redis as it started (resume_ttl passed, or `dask-redisparam clean`): compute again"
        )
    fields = {new for rid in missing for new in adoptions[rid]}  # a whole source is computed again
    run.adopted_done(fields)
    return fields


def download(backend: Backend, run: RunState, keys: Sequence[Hashable]) -> dict[Hashable, Any]:
    """The values of the finished ``keys`` of ``run`` (one round trip); keys without a value are left out."""
    out, remote, fields = run.locate(keys)
    if remote:
        options = run.options
        fetch_stored(
            backend,
            run.job,
            run.run_id,
            dict(zip(remote, fields, strict=True)),
            options.signer,
            out,
            options.describe_server,
        )
    return out


def fetch_stored(
    backend: Backend,
    job: str,
    run_id: str,
    fields: dict[Hashable, str],
    signer: Signer | None,
    into: dict[Hashable, Any],
    describe_server: str,
) -> None:
    """Download the values of ``fields`` (key -> field of the run's data hash) ``into`` the dict, in one round trip
    (and one more for the parts of large values); a value that is gone or refused raises."""
    remote = list(fields)
    read_parts = functools.partial(backend.read_parts, job, run_id)
    failed: dict[Hashable, PayloadRejected | None] = {}
    for start in range(0, len(remote), FETCH_FIELDS):  # a bounded reply at a time: the memory of a large run's end
        chunk = remote[start : start + FETCH_FIELDS]
        blobs = backend.fetch_values(job, run_id, [fields[key] for key in chunk])
        failed.update(triage(chunk, open_values(blobs, signer, job, read_parts), into))
        del blobs
    for key, error in failed.items():  # the first one raises
        if error is not None:
            raise PayloadRejected(f"the stored value of {key!r} was rejected, not unpickled: {error}")
        raise RunLost(
            f"the value of {key!r} is missing from Redis at {describe_server}: "
            "was the server restarted without persistence, or the key evicted?"
        )


def count_and_reap(backend: Backend, jobname: str, signer: Signer | None = None) -> int:
    """Count the live workers; requeue what dead ones held (any manager of the job may do it; it is atomic).

    The runs' managers are told with loss notices signed by ``signer`` (the job's secret), if given.
    """
    live, dead = backend.worker_liveness(jobname)
    for worker_id in dead:
        moved = backend.reap_worker(jobname, worker_id, lost_notices(signer, jobname, worker_id))
        if moved:
            logger.warning(
                "manager: worker %s of job %s is gone; requeued %d message(s)", worker_id, jobname, len(moved)
            )
    return len(live)


class _Outage:
    """Bounded backoff while Redis cannot be reached."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.since: float | None = None
        self.delay = 0.05

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            logger.warning("manager: lost Redis at %s (%s); reconnecting", self.where, error)
        if now - self.since > OUTAGE_GRACE:
            if isinstance(error, ServerLoading):
                raise ServerLoading(
                    f"Redis at {self.where} was still loading its dataset after {OUTAGE_GRACE:.0f} s: compute again "
                    "once it has loaded (its log shows the progress)"
                ) from error
            raise ServerUnavailable(
                f"lost the connection to Redis at {self.where} for more than {OUTAGE_GRACE:.0f} s: {error}"
            ) from error
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 2.0)

    def succeeded(self) -> None:
        if self.since is not None:
            logger.warning("manager: reconnected to Redis at %s", self.where)
        self.since, self.delay = None, 0.05


def _finisher(
    finish: Callable[[Backend, RunState], dict[Hashable, Any]] | None, early: dict[Hashable, Any] | None
) -> Callable[[Backend, RunState], dict[Hashable, Any]]:
    """What ends the run: ``finish``, or the download of the requested values (those not in ``early`` yet)."""
    if early is None:
        return finish or download_results

    def rest(backend: Backend, run: RunState) -> dict[Hashable, Any]:
        wanted = run.result_keys()
        got = download(backend, run, [key for key in wanted if key not in early])
        # in the order of the request, as a download at the end gives them (partial results print the same)
        return {key: early[key] if key in early else got[key] for key in wanted if key in early or key in got}

    return rest


def run_loop(
    backend: Backend,
    run: RunState,
    count_workers: Callable[[], int],
    lease: RunLease,
    watch: Any = None,
    early: dict[Hashable, Any] | None = None,
) -> None:
    """Turn until every task finished, or nothing more can run, or (stopping) the running tasks are drained;
    ``watch`` (a :class:`~dask_redisparam.manager.follow.FailoverWatch`, default a new one) follows failovers.

    With ``early`` (a dict; ``run.collect_results`` set), the values of the requested keys finished in a turn are
    downloaded into it in the next one, once its messages are pushed: while the workers run them, instead of all
    at the end (those missed through a lost connection are downloaded at the end).
    """
    job = run.job
    outage = _Outage(run.options.describe_server)
    last_count = last_warning = time.monotonic()
    _count(backend, run, count_workers)
    todo = Commands([], [], [], [])  # what the state asked for and Redis has not surely done yet
    acknowledge: list[bytes] = []
    retried_counted = 0  # of run.retried, how many the job's metrics have
    drain_until: float | None = None
    feeding = run.options.feed is not None
    resume = run.options.resume_ttl > 0
    progress = (-1, -1)
    watch = watch or FailoverWatch.of(backend, run, lease)
    frozen = 0  # tasks finished at the last freeze_long_lived()
    while feeding or len(run.state["finished"]) < len(run.graph.nodes):
        if not feeding and len(run.state["finished"]) - frozen >= FREEZE_TASKS:
            frozen = len(run.state["finished"])
            freeze_long_lived()
        if run.stopping and drain_until is None:
            drain_until = time.monotonic() + DRAIN_SECONDS
            _withdraw_queued(backend, run)
        if drain_until is not None and (not run.messages or time.monotonic() > drain_until):
            return
        lease.check()
        try:
            now = time.monotonic()
            if now - last_count >= 1.0:
                _count(backend, run, count_workers)
                last_count = now
            if feeding and not run.stopping:
                assert run.options.feed is not None
                feeding = run.options.feed(run)
            elif feeding:
                feeding = False
            if run.to_adopt:
                _copy_adopted(backend, run, run.take_adoptions())
            _carry(backend, run, run.take_commands(), todo)
            if todo.withdraw:
                backend.withdraw(job, todo.withdraw, run.routes)
                todo.withdraw = []
            registry: dict[str, bytes] | None = None
            if resume:
                registry, progress = _registry_update(run, progress)
            retried = run.retried - retried_counted
            started = time.perf_counter()
            records, alive = backend.exchange(
                job,
                run.run_id,
                todo.push,
                todo.release,
                RUN_TTL,
                acknowledge,
                registry=registry,
                retried=retried,
                routes=run.routes,
                classes=run.classes(),
            )
            run.turn_took(time.perf_counter() - started)
            todo.push, todo.release, acknowledge, retried_counted = [], [], records, run.retried
            run.new_ids = []
            outage.succeeded()
            watch.after_exchange(backend, alive)  # RunLost if the run vanished, unless a failover explains it
            if early is not None and run.new_results:
                early.update(download(backend, run, run.take_new_results()))
            if not records and run.messages:
                backend.wait_records(job, run.run_id, run.options.wait_seconds)
            elif not records and not run.any_ready() and not feeding:
                if len(run.state["finished"]) == len(run.graph.nodes):
                    continue  # the feed just ran dry with everything done
                if run.errors:
                    return  # what is left depends on failed tasks
                waiting = list(run.state["waiting"])[:5]
                raise RuntimeError(f"run {run.run_id} has tasks waiting on nothing: {waiting}")
            elif not records and (run.window == 0 or run.waiting_for_resources()):
                if run.window == 0 and now - last_warning >= WAIT_WARNING:
                    logger.warning(
                        "manager: no live worker serves job %r on %s; waiting for one", job, run.options.describe_server
                    )
                    last_warning = now
                time.sleep(0.1)
                if run.window == 0:  # (a class waiting for resources: the workers' records are read each second)
                    last_count = 0.0
        except TRANSIENT_ERRORS as e:
            outage.failed(e)
            continue
        for record in records:
            run.handle(record)
        _carry(backend, run, run.take_commands(fill=False), todo)
        if run.options.on_result is not None:
            _stream_results(backend, run, run.options.on_result)
        if run.options.on_done is not None:
            run.options.on_done(run)


def _count(backend: Backend, run: RunState, count_workers: Callable[[], int]) -> None:
    """Tell the run the live workers (its window) and, if it has tasks with resources, what the live workers
    have (the windows of its resource classes); warn about tasks that no live worker can run."""
    run.set_workers(count_workers())
    if run.task_class:
        run.set_capacity(daemons_of(backend.worker_records(run.job)))
        for text in run.resource_warnings():
            logger.warning(text)


def _registry_update(run: RunState, last: tuple[int, int]) -> tuple[dict[str, bytes] | None, tuple[int, int]]:
    """The run's fields to set in the job's registry of runs this turn: progress (if it moved), identities of
    added tasks (kept in ``run.new_ids`` until then: a failed turn sends them again)."""
    now = (len(run.state["finished"]), len(run.graph.nodes))
    fields = {ids_field(run.run_id, first): ids for first, ids in run.new_ids}
    if now != last:
        fields[progress_field(run.run_id)] = f"{now[0]} {now[1]}".encode()
    return fields or None, now


def _carry(backend: Backend, run: RunState, commands: Commands, todo: Commands) -> None:
    """Do at once what needs no round trip of the turn (show task logs, ask for the live workers); keep the rest
    in ``todo``, for the turn's round trip."""
    todo.push += commands.push
    todo.release += commands.release
    todo.withdraw += commands.withdraw
    for key, worker, log in commands.logs:
        emit_task_log(log, key=key, worker=worker, jobname=run.job, logdir=run.options.logdir)
    if commands.ask_live_workers:
        try:
            live = backend.live_workers(run.job)
        except TRANSIENT_ERRORS:  # asked again with the next rejection notice
            return
        run.workers_seen(live)


def _stream_results(backend: Backend, run: RunState, on_result: Callable[[Hashable, Any], None]) -> None:
    """Hand newly computed requested values to the consumer, then drop them from Redis."""
    keys = run.take_new_results()
    if not keys:
        return
    values = download(backend, run, keys)  # keys without a value here (saved on disk, nothing needed them) are skipped
    keep = run.options.resume_ttl > 0  # kept in Redis until the run ends, for a later resume
    for key in keys:
        if key in values:
            on_result(key, values[key])
        run.hand_over(key, keep)


def _withdraw_queued(backend: Backend, run: RunState) -> None:
    """Stop on error: take back the messages no worker has claimed; those running may finish (drain)."""
    sent = run.in_flight()
    flags = backend.withdraw(run.job, [message for _, message in sent], run.routes)
    run.withdrawn([msg_id for (msg_id, _), withdrawn in zip(sent, flags, strict=True) if withdrawn])


def close_run(backend: Backend, run: RunState, ending: str = "clean", keep: float = 0.0) -> None:
    """End the run: withdraw its queued messages; then, by ``ending``: ``"errors"`` (tasks failed) keeps its values
    for ``redo=``, ``"crash"`` (the manager ends by an exception) keeps them ``keep`` seconds for a later resume
    (with resume on), else (``"clean"``, ``"oom"``) everything of the run is deleted. A clean end also drops the
    dead runs it resumed from (their values live on in this run's results)."""
    try:
        in_flight = run.in_flight()
        if in_flight:
            withdrawn = sum(backend.withdraw(run.job, [message for _, message in in_flight], run.routes))
            if withdrawn:
                logger.debug("manager: withdrew %d queued message(s) of run %s", withdrawn, run.run_id)
        options = run.options
        if ending == "crash" and options.resume_ttl > 0:
            progress = f"{len(run.state['finished'])} {len(run.graph.nodes)}"
            if backend.keep_for_resume(run.job, run.run_id, keep, progress):
                logger.info(
                    "manager: run %s of job %r ended unfinished; its values stay %g s for a resume",
                    run.run_id,
                    run.job,
                    keep,
                )
            return
        if ending == "errors" and options.redo_ttl > 0:
            backend.keep_for_redo(run.job, run.run_id, options.redo_ttl)
        backend.close_run(run.job, run.run_id, run.classes())
        resumer = options.resumer
        if ending == "clean" and resumer is not None and resumer.adopted:
            backend.forget_runs(run.job, sorted({a.run_id for a in resumer.adopted.values()}))
    except Exception as e:  # never hide the run's own outcome behind a clean-up failure
        logger.warning("manager: could not clean up run %s: %s", run.run_id, e)

"""The manager's state machine (:class:`~dask_redisparam.manager.state.RunState`) driven without Redis.

Graphs come from :func:`~dask_redisparam.manager.graph.prepare_graph`; the "workers" are these tests: they read the
messages the state hands out with the real codecs and answer with fabricated completion records and notices. No
Redis fixture is used: every test runs in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from operator import add, neg
from typing import Any

import pytest

from dask_redisparam.config.settings import Settings
from dask_redisparam.errors import KilledWorker, MessagesRejected, TaskErrors, TaskTimeout, Unevaluated
from dask_redisparam.logs import TaskLog
from dask_redisparam.manager.graph import prepare_graph
from dask_redisparam.manager.options import Commands, RunOptions, StoredResult
from dask_redisparam.manager.rejections import REJECT_SECONDS
from dask_redisparam.manager.state import TARGET_SECONDS, RunState
from dask_redisparam.wire.protocol import (
    ERROR,
    OK,
    UNEVALUATED,
    Batch,
    Completion,
    Outcome,
    decode_header,
    dumps_completion,
    encode_lost,
    encode_rejected,
    open_task,
    split_payload,
)
from dask_redisparam.wire.serialize import dumps_exception, loads
from dask_redisparam.wire.signing import Signer

JOB = "state-job"


def run_options(**changes: Any) -> RunOptions:
    """A run's options with every setting at its default (as a param without arguments), then ``changes``."""
    return dataclasses.replace(RunOptions.from_settings(Settings(jobname=JOB, environ={})), **changes)


HI = TaskLog(stdout="hi\n")


class Clock:
    """An injected monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_run(
    dsk: dict[Hashable, Any],
    keys: list[Hashable],
    *,
    workers: int = 1,
    annotations: dict[str, dict[Hashable, Any]] | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> RunState:
    graph = prepare_graph(dsk, keys)
    graph.annotations.update(annotations or {})
    run = RunState(graph, run_options(**options), [], clock=clock or Clock(), run_id="r1")
    assert run.start({k: None for k in run.known_to_load()}) == ({}, [], {})
    run.set_workers(workers)
    return run


def batch_of(message: bytes) -> Batch:
    _, batch = split_payload(open_task(message, None, JOB))
    out = loads(batch)
    assert isinstance(out, Batch)
    return out


def keys_of(message: bytes) -> list[Hashable]:
    return [entry.key for entry in batch_of(message).entries]


def msg_id_of(message: bytes) -> int:
    return decode_header(message)[1]


def completion(
    message: bytes,
    *,
    worker: str = "w1",
    errors: dict[Hashable, BaseException] | None = None,
    seconds: float = 0.001,
    log: TaskLog | None = None,
) -> bytes:
    """The record a worker would send for ``message``: OK for every entry, except ``errors``; with stop on error,
    the entries after a failed one are not evaluated (as ``execute.run_batch``)."""
    batch, errors = batch_of(message), errors or {}
    outcomes, failed = [], False
    for entry in batch.entries:
        if failed and batch.stop_on_error:
            outcomes.append(Outcome(entry.idx, UNEVALUATED, None, 0, 0.0, 0.0))
        elif entry.key in errors:
            failed = True
            error = dumps_exception(errors[entry.key], None)
            outcomes.append(Outcome(entry.idx, ERROR, error, 0, 0.0, seconds, log))
        else:
            outcomes.append(Outcome(entry.idx, OK, None, 8 if entry.store else 0, 0.0, seconds, log))
    done = Completion(msg_id_of(message), 0, worker, outcomes, None)
    return dumps_completion(done, None, JOB, "r1")


def independent(n: int) -> dict[Hashable, Any]:
    return {f"t{i}": (neg, i) for i in range(n)}


def drive(run: RunState, limit: int = 1000) -> list[list[Hashable]]:
    """Run everything to the end, one message at a time: the keys of each message, in order."""
    sent: list[list[Hashable]] = []
    for _ in range(limit):
        push = run.take_commands().push
        if not push:
            return sent
        for message in push:
            sent.append(keys_of(message))
            run.handle(completion(message))
    raise AssertionError("the run never ended")


# ---------------------------------------------------------------------------------------------------- ordering
def test_no_backend_and_no_io_in_the_state() -> None:
    run = new_run({"x": 1}, ["x"])
    assert not any("backend" in name for name in vars(run))
    assert isinstance(run.take_commands(), Commands)


def test_dask_order_decides_among_ready_tasks() -> None:
    dsk: dict[Hashable, Any] = {f"a{i}": (neg, i) for i in range(4)}
    dsk.update({"b0": (add, "a0", "a1"), "b1": (add, "a2", "a3"), "c": (add, "b0", "b1")})
    run = new_run(dsk, ["c"], fuse_chains=False)
    sent = [keys for keys in drive(run) for keys in keys]
    assert sent == sorted(run.graph.nodes, key=run.graph.priority.__getitem__)
    assert run.state["finished"] == set(dsk) and not run.state["running"] and not run.state["ready"]


def test_user_priority_goes_first() -> None:
    run = new_run(independent(5), list(independent(5)), annotations={"priority": {"t3": 10, "t4": 5}})
    assert [key for keys in drive(run) for key in keys] == ["t3", "t4", "t0", "t1", "t2"]


def test_chains_travel_in_one_message() -> None:
    run = new_run({"a": (neg, 1), "b": (neg, "a"), "c": (neg, "b")}, ["c"])
    assert drive(run) == [["a", "b", "c"]]
    run = new_run({"a": (neg, 1), "b": (neg, "a"), "c": (neg, "b")}, ["c"], fuse_chains=False)
    assert drive(run) == [["a"], ["b"], ["c"]]


def test_literals_inline_and_released_values() -> None:
    run = new_run({"x": 5, "y": (neg, "x"), "z": (neg, "y")}, ["z"], fuse_chains=False)
    (message,) = run.take_commands().push
    assert batch_of(message).inline == {run.idx["x"]: 5}  # the small literal travels inside the message
    run.handle(completion(message))
    (message,) = run.take_commands().push
    assert run.take_commands().release == []  # y is still needed by z
    run.handle(completion(message))
    assert run.take_commands(fill=False).release == [str(run.idx["y"])]  # z is requested: kept
    assert run.state["released"] >= {"x", "y"} and run.state["cache"]["z"].nbytes == 8


def test_large_literal_is_uploaded_once() -> None:
    graph = prepare_graph({"big": b"x" * 100_000, "n": (len, "big")}, ["n"])
    run = RunState(graph, run_options(), [], run_id="r1")
    uploads, parts, copies = run.start({})
    assert list(uploads) == [str(run.idx["big"])] and parts == [] and copies == {}


# ---------------------------------------------------------------------------------------------------- window
def test_no_more_than_window_messages_in_flight() -> None:
    run = new_run(independent(20), list(independent(20)), workers=2, queue_multiplier=2.0)
    assert run.window == 4
    push = run.take_commands().push
    assert len(push) == 4 and all(len(keys_of(m)) == 1 for m in push)  # unmeasured: one task a message
    assert run.take_commands().push == []  # the window is full
    run.handle(completion(push[0], seconds=0.0))
    assert len(run.take_commands().push) == 1
    run.set_workers(0)
    run.handle(completion(push[1]))
    assert run.take_commands().push == [] and len(run.messages) == 3


def test_chunks_follow_measured_task_times() -> None:
    run = new_run(independent(200), list(independent(200)), workers=2, queue_multiplier=2.0)
    push = run.take_commands().push
    run.handle(completion(push[0], seconds=TARGET_SECONDS / 10))
    (chunk,) = run.take_commands().push
    assert len(keys_of(chunk)) == 10  # about TARGET_SECONDS of work
    run = new_run(independent(20), list(independent(20)), timeout=5.0)
    push = run.take_commands().push
    run.handle(completion(push[0], seconds=0.0001))
    assert [len(keys_of(m)) for m in run.take_commands().push] == [1]  # with a timeout, one task a message


# ---------------------------------------------------------------------------------------------------- retries
def test_error_with_retries_left_goes_back_to_ready() -> None:
    run = new_run({"a": (neg, 1)}, ["a"], retries=1)
    (message,) = run.take_commands().push
    run.handle(completion(message, errors={"a": ValueError("once")}))
    assert not run.errors and [key for *_, key in run.state["ready"]] == ["a"] and not run.state["running"]
    (message,) = run.take_commands().push
    run.handle(completion(message, errors={"a": ValueError("twice")}))
    assert isinstance(run.error, ValueError) and str(run.error) == "twice"
    assert run.retries["a"] == 0 and run.unevaluated() == []


def test_annotated_retries_override_the_setting() -> None:
    run = new_run({"a": (neg, 1)}, ["a"], retries=0, annotations={"retries": {"a": 2}})
    for _ in range(2):
        (message,) = run.take_commands().push
        run.handle(completion(message, errors={"a": ValueError("again")}))
        assert not run.errors
    (message,) = run.take_commands().push
    run.handle(completion(message, errors={"a": ValueError("last")}))
    assert isinstance(run.error, ValueError)


def test_task_timeout_is_never_retried() -> None:
    run = new_run({"a": (neg, 1)}, ["a"], retries=3)
    (message,) = run.take_commands().push
    run.handle(completion(message, errors={"a": TaskTimeout(None, 2.0)}))
    assert isinstance(run.error, TaskTimeout) and run.error.key == "a"  # the supervisor knew no key
    assert run.take_commands().push == []


def test_unevaluated_entries_wait_for_their_inputs_again() -> None:
    run = new_run({"a": (neg, 1), "b": (neg, "a")}, ["b"], retries=1)
    (message,) = run.take_commands().push
    assert keys_of(message) == ["a", "b"]
    run.handle(completion(message, errors={"a": ValueError("once")}))  # b: not evaluated
    assert not run.errors and run.state["waiting"] == {"b": {"a"}} and not run.state["running"]
    (message,) = run.take_commands().push
    assert keys_of(message) == ["a", "b"]  # the chain again
    run.handle(completion(message))
    assert run.state["finished"] == {"a", "b"}


def test_batch_error_fails_the_first_task() -> None:
    run = new_run({"a": (neg, 1), "b": (neg, "a")}, ["b"])
    (message,) = run.take_commands().push
    error = dumps_exception(RuntimeError("cannot unpickle"), None)
    run.handle(dumps_completion(Completion(msg_id_of(message), 0, "w1", [], error), None, JOB, "r1"))
    assert isinstance(run.errors["a"], RuntimeError) and run.stopping


def test_a_record_read_twice_counts_once() -> None:
    run = new_run({"a": (neg, 1)}, ["a"])
    (message,) = run.take_commands().push
    record = completion(message)
    run.handle(record)
    run.handle(record)  # a duplicate
    assert run.state["finished"] == {"a"} and len(run.timeline) == 1


# ---------------------------------------------------------------------------------------------------- losses
def lost(run: RunState, message: bytes, stamp: int, worker: str = "w1") -> None:
    run.handle(encode_lost(msg_id_of(message), stamp, worker, None, JOB, run.run_id))


def test_killed_worker_after_allowed_failures_plus_one_deaths() -> None:
    run = new_run({"a": (neg, 1)}, ["a"], allowed_failures=1)
    (message,) = run.take_commands().push
    lost(run, message, 111)
    lost(run, message, 111)  # the same death, read twice: counted once
    assert not run.errors and run.take_commands().withdraw == []
    lost(run, message, 222, "w2")
    error = run.errors["a"]
    assert isinstance(error, KilledWorker) and error.attempts == 2 and error.last_worker == "w2"
    commands = run.take_commands()
    assert commands.withdraw == [message] and commands.push == [] and not run.messages
    assert not run.state["running"]
    run.handle(completion(message))  # a late record of the message given up: dropped
    assert "a" not in run.state["finished"]


def test_bad_loss_notice_is_not_counted() -> None:
    run = new_run({"a": (neg, 1)}, ["a"], allowed_failures=0)
    (message,) = run.take_commands().push
    run.handle(encode_lost(msg_id_of(message), 1, "w1", None, JOB, "another-run"))  # fine unsigned: parses
    run.handle(b"!L|garbage")
    assert isinstance(run.errors.get("a"), KilledWorker)  # the first counted; the garbage was ignored


# ---------------------------------------------------------------------------------------------------- stop on error
def test_stop_on_error_stops_dispatch_and_withdraws_queued_messages() -> None:
    run = new_run(independent(10), list(independent(10)), workers=4, queue_multiplier=1.0)
    push = run.take_commands().push
    run.handle(completion(push[0], errors={"t0": ValueError("boom")}))
    assert run.stopping and run.take_commands().push == []  # nothing new while draining
    in_flight = run.in_flight()
    assert [m for _, m in in_flight] == push[1:]
    run.withdrawn([in_flight[0][0], in_flight[1][0]])  # the loop took back two; the third was claimed
    assert run.in_flight() == in_flight[2:] and run.state["running"] == set(keys_of(push[3]))
    run.handle(completion(push[3]))  # the one running finishes: its result is kept
    assert "t3" in run.state["finished"] and not run.messages
    with pytest.raises(ValueError, match="boom") as info:
        run.outcome({"t3": -3})
    assert info.value.results == {"t3": -3} and set(info.value.unevaluated) == set(independent(10)) - {"t0", "t3"}


def test_without_stop_on_error_every_task_runs() -> None:
    run = new_run(independent(4), list(independent(4)), stop_on_error=False, redo_ttl=0)
    for message in run.take_commands().push:
        run.handle(completion(message, errors={"t1": ValueError("one")}))
    drive(run)
    assert run.state["finished"] == {"t0", "t2", "t3"} and not run.stopping
    with pytest.raises(TaskErrors) as info:
        run.outcome({})
    assert set(info.value.errors) == {"t1"} and info.value.redo is None


def test_return_exceptions() -> None:
    run = new_run({"a": (neg, 1), "b": (neg, "a"), "c": (neg, 3)}, ["b", "c"], return_exceptions=True)
    run.set_workers(2)
    push = run.take_commands().push
    failing = next(m for m in push if "a" in keys_of(m))
    run.handle(completion(failing, errors={"a": ValueError("a")}))
    out = run.outcome({"c": -3})
    assert out["c"] == -3 and isinstance(out["b"], ValueError | Unevaluated)


# ---------------------------------------------------------------------------------------------------- redo
def test_redo_info_holds_the_inputs_of_what_failed() -> None:
    dsk = {"x": (neg, 1), "y": (neg, "x"), "z": (neg, "x"), "lit": 4, "w": (add, "lit", "z")}
    run = new_run(dsk, ["y", "w"], stop_on_error=False, fuse_chains=False)
    (message,) = run.take_commands().push
    assert keys_of(message) == ["x"]
    run.handle(completion(message))
    for message in run.take_commands().push:
        run.handle(completion(message, errors={"y": ValueError("y")}))
    drive(run)
    info = run.redo_info()
    assert info.jobname == JOB and info.run_id == "r1" and info.parts == {}
    # x is kept (y, which failed, needs it), w is requested; z was released and lit travels inline
    assert info.fields == {"x": str(run.idx["x"]), "w": str(run.idx["w"])}
    assert run.unevaluated() == []
    with pytest.raises(TaskErrors) as error:
        run.outcome({"w": 3})
    assert error.value.redo == info


# ---------------------------------------------------------------------------------------------------- rejections
def rejected(run: RunState, message: bytes, nonce: str, worker: str = "w1") -> None:
    run.handle(encode_rejected(msg_id_of(message), 0, nonce, "no-secret", worker))


def test_refused_message_is_sent_again_and_the_run_fails_when_every_worker_refuses() -> None:
    clock = Clock()
    run = new_run({"a": (neg, 1), "b": (neg, 2)}, ["a", "b"], clock=clock, workers=2)
    first, second = run.take_commands().push
    rejected(run, first, "n1")
    rejected(run, first, "n1")  # the same notice, read twice
    commands = run.take_commands()
    assert commands.push == [first] and not commands.ask_live_workers
    clock.now += REJECT_SECONDS + 1
    rejected(run, first, "n2")
    commands = run.take_commands()
    assert commands.push == [first] and commands.ask_live_workers
    run.workers_seen(["w1", "w2"])  # w2 may accept it: keep going
    clock.now += 0.5
    rejected(run, first, "n3")
    assert not run.take_commands().ask_live_workers  # asked at most once a second
    clock.now += 1
    rejected(run, first, "n4")
    assert run.take_commands().ask_live_workers
    with pytest.raises(MessagesRejected, match="every live worker"):
        run.workers_seen(["w1"])


def test_an_accepted_message_resets_the_rejection_clock() -> None:
    clock = Clock()
    run = new_run({"a": (neg, 1), "b": (neg, 2)}, ["a", "b"], clock=clock, workers=2)
    first, second = run.take_commands().push
    rejected(run, first, "n1")
    clock.now += REJECT_SECONDS + 1
    run.handle(completion(second, worker="w2"))
    rejected(run, first, "n2")
    assert not run.take_commands().ask_live_workers
    run.workers_seen(["w1"])  # nothing to judge: no rejection for REJECT_SECONDS


def test_malformed_rejection_notice_is_dropped() -> None:
    run = new_run({"a": (neg, 1)}, ["a"])
    run.take_commands()
    run.handle(b"!R|x")
    assert run.take_commands().push == []


def test_rejected_while_stopping_is_given_up() -> None:
    run = new_run({"a": (neg, 1), "b": (neg, 2)}, ["a", "b"], workers=2)
    first, second = run.take_commands().push
    run.handle(completion(first, errors={"a": ValueError("x")}))
    rejected(run, second, "n1")
    assert not run.messages and run.take_commands().push == [] and not run.state["running"]


# ---------------------------------------------------------------------------------------------------- streaming
def test_stream_feed_adds_tasks_and_hands_out_results() -> None:
    got: list[Hashable] = []
    run = RunState(
        prepare_graph({}, []),
        run_options(on_result=lambda k, v: got.append(k), feed=lambda r: True),
        [],
        run_id="r1",
    )
    run.start({})
    run.set_workers(1)
    assert run.take_commands().push == []
    for i in range(3):
        run.add_task(("it", i), prepare_graph({("it", i): (neg, i)}, [("it", i)]).nodes[("it", i)])
    push = run.take_commands().push
    assert len(push) == 2  # the window: queue_multiplier (2) messages for one worker
    for message in push:
        run.handle(completion(message, log=TaskLog(stdout="hi\n")))
    assert run.take_commands(fill=False).logs == [(("it", 0), "w1", HI), (("it", 1), "w1", HI)]
    new = run.take_new_results()
    assert new == [("it", 0), ("it", 1)] and run.take_new_results() == []
    here, remote, fields = run.locate(new)
    assert here == {} and remote == new and fields == [str(run.idx[k]) for k in new]
    assert isinstance(run.state["cache"][("it", 0)], StoredResult) and run.state["cache"][("it", 0)].worker == "w1"
    for key in new:
        run.forget(key)
    assert run.take_commands(fill=False).release == fields
    assert run.result_keys() == [("it", 2)]
    drive(run)
    assert run.take_new_results() == [("it", 2)]


def test_signed_run_drops_records_and_notices_it_cannot_verify() -> None:
    signer = Signer.from_secret("s" * 32)
    graph = prepare_graph({"a": (neg, 1)}, ["a"])
    run = RunState(graph, run_options(signer=signer, allowed_failures=0), [], run_id="r1")
    run.start({})
    run.set_workers(1)
    (message,) = run.take_commands().push
    _, batch = split_payload(open_task(message, signer, JOB))
    outcome = Outcome(loads(batch).entries[0].idx, OK, None, 8, 0.0, 0.001)
    done = Completion(msg_id_of(message), 0, "w1", [outcome], None)
    run.handle(dumps_completion(done, None, JOB, "r1"))  # unsigned
    run.handle(dumps_completion(done, signer, JOB, "another-run"))  # signed for another run
    run.handle(encode_lost(msg_id_of(message), 1, "w1", None, JOB, "r1"))  # an unsigned loss notice
    assert run.messages and not run.state["finished"] and not run.errors
    run.handle(dumps_completion(done, signer, JOB, "r1"))
    assert run.state["finished"] == {"a"}

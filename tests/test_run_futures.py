"""The futures part of the state machine (:mod:`dask_redisparam.manager.run_futures` and ``add_task`` with
dependencies), driven without Redis as in ``tests/test_state.py``: the tests answer the messages themselves."""

from __future__ import annotations

from collections.abc import Hashable
from operator import add, neg
from typing import Any

from dask._task_spec import Task, TaskRef

from dask_redisparam.manager.state import RunState
from tests.test_state import completion, keys_of, new_run


def futures_run(workers: int = 1) -> tuple[RunState, list[Hashable]]:
    """An empty streaming run with ``on_done`` (as the executor's); the list collects what it reported."""
    reported: list[Hashable] = []

    def on_done(run: RunState) -> None:
        reported.extend(run.take_new_results())
        reported.extend(("error", key) for key, _ in run.take_new_errors())

    run = new_run({}, [], workers=workers, on_done=on_done, stop_on_error=False, redo_ttl=0.0)
    return run, reported


def submit(run: RunState, key: str, func: Any, *args: Any) -> None:
    deps = [a.key for a in args if isinstance(a, TaskRef)]
    run.add_task(key, Task(key, func, *args), deps)


def answer(run: RunState, **errors: BaseException) -> list[list[Hashable]]:
    """Answer every pushed message (OK, or the given errors); the keys of each message."""
    sent = []
    for message in run.take_commands().push:
        sent.append(keys_of(message))
        run.handle(completion(message, errors=errors))
    assert run.options.on_done is not None
    run.options.on_done(run)
    return sent


def test_a_dependency_is_an_edge_of_the_run_and_results_stay() -> None:
    run, reported = futures_run()
    submit(run, "a", neg, 1)
    submit(run, "b", add, TaskRef("a"), 10)  # fused behind "a": both kept, both reported
    assert answer(run) == [["a", "b"]]
    assert reported == ["a", "b"] and run.pending == 0
    assert run.take_commands().release == []  # held: nothing deleted until dropped
    submit(run, "c", neg, TaskRef("a"))  # on a finished value: ready at once
    assert answer(run) == [["c"]]
    run.drop("a")
    assert run.take_commands().release == ["0"]  # the field of a
    assert "a" not in run.graph.nodes and run.pending == 0


def test_a_dropped_value_stays_while_a_pending_task_reads_it() -> None:
    run, _ = futures_run()
    submit(run, "a", neg, 1)
    answer(run)
    submit(run, "b", neg, TaskRef("a"))
    run.drop("a")
    assert run.take_commands(fill=False).release == []  # b still needs it
    answer(run)
    assert run.take_commands().release == ["0"]  # gone once b finished


def test_a_failure_fails_its_dependents_at_once() -> None:
    run, reported = futures_run()
    submit(run, "a", neg, 1)
    submit(run, "b", neg, TaskRef("a"))  # fused: not evaluated after a fails
    submit(run, "c", add, TaskRef("a"), TaskRef("b"))
    answer(run, a=ZeroDivisionError("x"))
    assert set(reported) == {("error", "a"), ("error", "b"), ("error", "c")}
    assert isinstance(run.errors["c"], ZeroDivisionError) and run.pending == 0 and not run.state["waiting"]
    submit(run, "d", neg, TaskRef("a"))  # submitted after the failure
    answer(run)
    assert ("error", "d") in reported
    for key in "abcd":
        run.drop(key)
    assert not run.errors and not run.graph.nodes


def test_cancel_on_the_manager_and_in_a_queued_message() -> None:
    run, reported = futures_run(workers=1)  # window: 2 messages
    for key in "abcd":
        submit(run, key, neg, 1)
    pushed = run.take_commands().push
    assert [keys_of(m) for m in pushed] == [["a"], ["b"]]
    assert run.cancel("c") and not run.cancel("a")  # c was ready on the manager; a is in a message
    msg_id, message = run.queued_message("b") or (None, b"")
    assert message == pushed[1]
    run.cancel_withdrawn(msg_id)  # as the loop does after taking it back from the queue
    assert "b" not in run.graph.nodes and "c" not in run.graph.nodes and run.pending == 2
    run.handle(completion(pushed[0]))
    assert [keys_of(m) for m in run.take_commands().push] == [["d"]]


def test_a_needed_task_is_not_cancelled() -> None:
    run, _ = futures_run()
    submit(run, "a", neg, 1)
    submit(run, "b", neg, 2)
    submit(run, "c", add, TaskRef("b"), 1)
    assert not run.cancel("b")  # c reads it
    submit(run, "w", neg, TaskRef("a"))
    assert run.cancel("w")  # waiting for its input: withdrawn
    assert run.graph.dependents["a"] == set()

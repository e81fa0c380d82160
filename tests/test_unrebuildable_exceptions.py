"""A task's exception that the manager cannot rebuild as itself arrives as a StandInError, never as an error from
inside the scheduler: its class does not unpickle (``__init__`` with two required arguments), refuses to be
pickled (``__reduce__`` raises), cannot be pickled at all (it holds a lock), or is importable on the workers only.

The stand-in keeps the original type name, message and traceback text, is a ``RemoteError`` with ``.key``,
``.worker`` and ``.remote_traceback``, and the other results survive: partial results with ``stop_on_error``,
``TaskErrors`` without it, ``try_compute``, and ``map``'s per-element errors.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dask
import pytest

from dask_redisparam import RedisParam, RemoteError, StandInError, TaskErrors, is_ok, try_compute
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.wire.serialize import dumps_exception, loads_exception, make_remote
from tests import tasks
from tests import tasks_exceptions as bad
from tests.conftest import CliWorkers

WORKER_ONLY = '''
class WorkerOnlyError(Exception):
    """Defined in a module that only the workers can import."""


def fail():
    raise WorkerOnlyError("only the workers know me")
'''

ON_THE_WORKER = "it does not round-trip through pickle on the worker"
ON_THE_MANAGER = "it cannot be unpickled on the manager"


@pytest.fixture
def worker_only(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a module on the workers' PYTHONPATH only (start the workers after this fixture)."""
    name = "drp_worker_only_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{name}.py").write_text(WORKER_ONLY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    assert str(tmp_path) not in sys.path and importlib.util.find_spec(name) is None  # the manager cannot import it
    return name


def cases(module: str) -> dict[str, tuple[Any, str, str, str]]:
    """Kind -> (task function and its leading arguments, type name, message, where the round trip fails)."""
    where = "tests.tasks_exceptions"
    return {
        "two_args": ((bad.raise_two_args,), f"{where}.TwoArgsError", "quota disk exceeded by 7", ON_THE_WORKER),
        "reduce_raises": ((bad.raise_reduce_raises,), f"{where}.ReduceRaisesError", "reduce refuses", ON_THE_WORKER),
        "locked": ((bad.raise_locked,), f"{where}.LockedError", "holds a lock", ON_THE_WORKER),
        "module": (
            (bad.raise_from_module, module),
            f"{module}.WorkerOnlyError",
            "only the workers know me",
            ON_THE_MANAGER,
        ),
    }


def check_stand_in(err: BaseException, key: Any, type_name: str, message: str, where: str, workers: list[str]) -> None:
    assert isinstance(err, StandInError) and isinstance(err, RemoteError), repr(err)
    assert (err.type_name, err.message) == (type_name, message)
    assert where in err.reason
    assert err.key == key
    assert err.worker in workers
    short = type_name.rsplit(".", 1)[1]
    assert f"{short}: {message}" in err.remote_traceback  # the traceback text as formatted on the worker
    assert "Traceback (most recent call last)" in err.remote_traceback
    assert str(err).startswith(f"{type_name}: {message} [a stand-in")
    assert f"make {type_name} picklable and importable on the manager" in str(err)


@pytest.fixture
def param_factory(redis_address: RedisAddress, jobname: str) -> Iterator[Callable[..., RedisParam]]:
    started: list[RedisParam] = []

    def make(**kwargs: Any) -> RedisParam:
        param = RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True), **kwargs)
        started.append(param.start())
        return param

    yield make
    for param in started:
        param.stop()


def test_stop_on_error_raises_the_stand_in_with_partial_results(
    worker_only: str, cli_workers: Callable[..., CliWorkers], param_factory: Callable[..., RedisParam]
) -> None:
    cli_workers(2)
    param = param_factory(stop_on_error=True)
    workers = param.worker_ids()
    for kind, (call, type_name, message, where) in cases(worker_only).items():
        dsk = {"a": (tasks.inc, 1), "bad": (*call, "a")}  # "a" finishes before "bad" runs
        with pytest.raises(StandInError) as info:
            param(dsk, ["a", "bad"])
        check_stand_in(info.value, "bad", type_name, message, where, workers)
        assert info.value.results == {"a": 2}, kind
        assert set(info.value.errors or {}) == {"bad"}, kind
        assert info.value.redo is not None
        assert param({"x": (tasks.inc, 41)}, "x") == 42  # the workers keep serving


def test_without_stop_on_error_every_other_result_survives(
    worker_only: str, cli_workers: Callable[..., CliWorkers], param_factory: Callable[..., RedisParam]
) -> None:
    cli_workers(2)
    param = param_factory(stop_on_error=False)
    workers = param.worker_ids()
    expected = cases(worker_only)
    dsk: dict[Any, Any] = {("ok", i): (tasks.inc, i) for i in range(20)}
    dsk.update({kind: (*call, ("ok", 0)) for kind, (call, *_) in expected.items()})
    dsk["ordinary"] = (bad.raise_value_error, ("ok", 1))
    dsk["after"] = (tasks.inc, "two_args")  # depends on a failed task: unevaluated
    with pytest.raises(TaskErrors) as info:
        param(dsk, list(dsk))
    err = info.value
    assert err.results == {("ok", i): i + 1 for i in range(20)}
    assert set(err.errors) == {*expected, "ordinary"}
    assert err.unevaluated == ["after"]
    for kind, (_, type_name, message, where) in expected.items():
        check_stand_in(err.errors[kind], kind, type_name, message, where, workers)
    ordinary = err.errors["ordinary"]  # an ordinary exception keeps its type, and carries the same
    assert isinstance(ordinary, ValueError) and isinstance(ordinary, RemoteError)
    assert (ordinary.key, str(ordinary)) == ("ordinary", "an ordinary failure")
    assert ordinary.worker in workers and "in raise_value_error" in ordinary.remote_traceback

    # the same through try_compute (return_exceptions): every output, exceptions in place
    kinds = list(expected)
    outputs = [dask.delayed(call[0])(*call[1:], 1) for call, *_ in expected.values()]
    outputs.append(dask.delayed(tasks.inc)(1))
    computed = try_compute(*outputs, scheduler=param)
    assert is_ok(list(computed)) == [False] * len(kinds) + [True]
    assert computed[-1] == 2
    for kind, value in zip(kinds, computed, strict=False):
        _, type_name, message, where = expected[kind]
        check_stand_in(value, value.key, type_name, message, where, workers)


@pytest.mark.parametrize("stop_on_error", [True, False])
def test_map_reports_each_element(
    stop_on_error: bool,
    worker_only: str,
    cli_workers: Callable[..., CliWorkers],
    param_factory: Callable[..., RedisParam],
) -> None:
    cli_workers(2)
    param = param_factory(stop_on_error=stop_on_error)
    workers = param.worker_ids()
    expected = cases(worker_only)
    kinds = ["fine", *expected, "fine", "value_error"]
    with pytest.raises((TaskErrors, StandInError)) as info:
        param.map(bad.element, kinds, [worker_only] * len(kinds))
    err = info.value
    errors = err.errors or {}
    if stop_on_error:  # one element per task: the first failure stops the run, with what was computed
        first = min(errors)
        assert err is errors[first] and isinstance(err, StandInError)
        assert (err.results or {}).get(0) == "fine"
    else:
        assert isinstance(err, TaskErrors)
        assert err.results == {0: "fine", 5: "fine"}
        assert set(errors) == {1, 2, 3, 4, 6}
        assert isinstance(errors[6], ValueError) and errors[6].worker in workers
    for i, error in errors.items():
        kind = kinds[i]
        if kind in expected:
            _, type_name, message, where = expected[kind]
            check_stand_in(error, i, type_name, message, where, workers)
    if not stop_on_error:
        returned = param.map(bad.element, kinds, [worker_only] * len(kinds), return_exceptions=True)
        assert returned[0] == returned[5] == "fine"
        assert [type(v).__name__ for v in returned[1:5]] == ["StandInError"] * 4
        with pytest.raises(TaskErrors) as iterated:  # iterate: the same, element by element
            param.iterate(iter(kinds), bad.element, module=worker_only)
        assert iterated.value.results == {0: "fine", 5: "fine"}
        for i, error in iterated.value.errors.items():
            if kinds[i] in expected:
                _, type_name, message, where = expected[kinds[i]]
                check_stand_in(error, i, type_name, message, where, workers)
            else:
                assert isinstance(error, ValueError) and error.worker in workers


class NewInsistsError(Exception):
    """Its ``__new__`` wants two arguments, its ``args`` hold one: it cannot be rebuilt as a RemoteError."""

    def __new__(cls, quota: str, used: int) -> NewInsistsError:
        self = super().__new__(cls, f"{quota}/{used}")
        self.args = (f"{quota}/{used}",)
        return self

    def __init__(self, quota: str, used: int) -> None:
        super().__init__(f"{quota}/{used}")


class BadStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_the_stand_in_covers_what_no_worker_can_send() -> None:
    """In-process: what reaches the manager is always an exception it can raise, never an error of its own."""
    stand_in, tb, text = loads_exception(b"not a pickle")  # an unreadable record (a forged one, on an unsigned job)
    assert isinstance(stand_in, StandInError) and "its record is unreadable" in stand_in.reason
    assert (tb, text) == (None, "")
    made = make_remote(NewInsistsError("disk", 7), "k", "w1", "Traceback ...")
    assert isinstance(made, StandInError) and made.type_name.endswith("test_unrebuildable_exceptions.NewInsistsError")
    assert (made.key, made.worker, made.message) == ("k", "w1", "disk/7")
    exc, _, text = loads_exception(dumps_exception(BadStrError("x"), None))  # round-trips; its str() fails
    assert type(exc) is BadStrError and "BadStrError" in text
    remote = make_remote(exc, "k", "w1", text)
    assert isinstance(remote, BadStrError) and isinstance(remote, RemoteError)
    copy = pickle.loads(pickle.dumps(make_remote(StandInError("m.E", "msg", "why"), "k", "w1", "tb")))
    assert (copy.type_name, copy.message, copy.reason, copy.key, copy.worker) == ("m.E", "msg", "why", "k", "w1")

"""Task logs: capture on the worker side, re-emission and log files on the manager side (no Redis needed)."""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dask_redisparam.config.settings import THRESHOLDS
from dask_redisparam.errors import ConfigurationError
from dask_redisparam.logs import (
    LEVELS,
    REMOTE_LOGGER,
    TaskLog,
    capture_task_output,
    emit_task_log,
    level_number,
    safe_task_name,
    task_log_path,
)

log = logging.getLogger("tests.task")


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_warning() -> Iterator[logging.Logger]:
    """The root logger at WARNING for the test (as in a process that did not configure logging)."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        root.setLevel(old)


def test_levels_match_settings() -> None:
    assert dict(LEVELS) == dict(THRESHOLDS)
    assert level_number("trace") == 5 and level_number("FATAL") == 50 and level_number(25) == 25
    for bad in ("LOUD", -1, True, 2.5):
        with pytest.raises(ConfigurationError, match="threshold"):
            level_number(bad)  # type: ignore[arg-type]


def test_captures_records_stdout_and_stderr(root_warning: logging.Logger) -> None:
    with capture_task_output(logging.INFO) as captured:
        log.info("hello %s", "world")
        print("printed")
        sys.stderr.write("to stderr")
        sys.stdout.buffer.write("bytes é\n".encode())
    assert [(r["name"], r["levelname"], r["msg"]) for r in captured.records] == [("tests.task", "INFO", "hello world")]
    record = captured.records[0]
    assert record["args"] is None and record["exc_info"] is None
    assert captured.stdout == "printed\nbytes é\n"
    assert captured.stderr == "to stderr"
    assert not captured.empty


def test_nothing_logged_is_empty(root_warning: logging.Logger) -> None:
    with capture_task_output("INFO") as captured:
        log.debug("below the threshold")
    assert captured.empty and captured == TaskLog()


def test_threshold_filters(root_warning: logging.Logger) -> None:
    with capture_task_output("WARN") as captured:
        log.info("no")
        log.warning("yes")
        logging.getLogger().error("root too")
    assert [r["msg"] for r in captured.records] == ["yes", "root too"]
    with capture_task_output("TRACE") as captured:
        log.log(5, "trace")
        log.log(4, "below trace")
    assert [(r["levelno"], r["msg"]) for r in captured.records] == [(5, "trace")]


def test_respects_logger_levels_and_excludes_own(root_warning: logging.Logger) -> None:
    quiet = logging.getLogger("tests.quiet")
    quiet.setLevel(logging.ERROR)
    try:
        with capture_task_output("DEBUG") as captured:
            quiet.warning("silenced by its own level")
            logging.getLogger("dask_redisparam.worker").warning("the worker's own record")
            log.debug("kept")
        assert [r["msg"] for r in captured.records] == ["kept"]
        with capture_task_output("DEBUG", exclude=()) as captured:
            logging.getLogger("dask_redisparam.worker").warning("now kept")
        assert [r["msg"] for r in captured.records] == ["now kept"]
    finally:
        quiet.setLevel(logging.NOTSET)


def test_existing_handlers_see_what_they_saw_before(root_warning: logging.Logger) -> None:
    existing = ListHandler()
    root_warning.addHandler(existing)
    child = logging.getLogger("tests.verbose")
    child.setLevel(logging.DEBUG)  # this logger's records reached the handler at DEBUG before the capture too
    try:
        with capture_task_output("DEBUG") as captured:
            log.info("hidden from the existing handler")
            log.warning("seen by both")
            child.debug("child debug")
        assert [r["msg"] for r in captured.records] == [
            "hidden from the existing handler",
            "seen by both",
            "child debug",
        ]
        assert [r.getMessage() for r in existing.records] == ["seen by both", "child debug"]
        assert existing.filters == []
    finally:
        root_warning.removeHandler(existing)
        child.setLevel(logging.NOTSET)


def test_restores_everything_after_an_exception(root_warning: logging.Logger) -> None:
    out, err = sys.stdout, sys.stderr
    handlers = list(root_warning.handlers)
    with pytest.raises(ZeroDivisionError):
        with capture_task_output("DEBUG") as captured:
            print("before the error")
            assert logging.getLogger().level == logging.DEBUG
            1 / 0  # noqa: B018
    assert sys.stdout is out and sys.stderr is err
    assert root_warning.level == logging.WARNING and root_warning.handlers == handlers
    assert captured.stdout == "before the error\n"
    log.info("after the block")  # not captured any more
    assert len(captured.records) == 0


def test_restores_the_root_level_without_handlers(
    root_warning: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(root_warning, "handlers", [])  # a worker process that did not configure logging
    with capture_task_output("DEBUG") as captured:
        log.debug("captured")
    assert root_warning.level == logging.WARNING and root_warning.handlers == []
    assert [r["msg"] for r in captured.records] == ["captured"]


def test_exception_text_and_unpicklable_extras_pickle(root_warning: logging.Logger) -> None:
    with capture_task_output("INFO") as captured:
        try:
            raise ValueError("bad value")
        except ValueError:
            log.exception("failed on %r", [1, 2], extra={"lock": threading.Lock(), "n": 3})
    record = captured.records[0]
    assert record["msg"] == "failed on [1, 2]" and record["exc_info"] is None
    assert "Traceback" in record["exc_text"] and "ValueError: bad value" in record["exc_text"]
    assert isinstance(record["lock"], str) and record["n"] == 3
    copy = pickle.loads(pickle.dumps(captured))
    assert copy == captured and isinstance(copy, TaskLog)


def test_records_from_other_threads_are_captured(root_warning: logging.Logger) -> None:
    with capture_task_output("INFO") as captured:
        thread = threading.Thread(target=log.warning, args=("from a thread",))
        thread.start()
        thread.join()
    assert [r["msg"] for r in captured.records] == ["from a thread"]


def _captured_log() -> TaskLog:
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.WARNING)
    try:
        with capture_task_output("TRACE") as captured:
            log.log(5, "tracing")
            log.warning("careful %d", 1)
            print("line 1\nline 2", end="")
            print("problem", file=sys.stderr)
    finally:
        root.setLevel(old)
    return captured


def test_emit_records_to_the_remote_logger(caplog: pytest.LogCaptureFixture) -> None:
    captured = _captured_log()
    caplog.set_level(1, logger=REMOTE_LOGGER)
    emit_task_log(captured, key=("x", 0), worker="w1", jobname="job", logdir=None)
    records = [r for r in caplog.records if r.name == REMOTE_LOGGER]
    assert [r.getMessage() for r in records] == [
        "[worker w1] [task ('x', 0)] tracing",
        "[worker w1] [task ('x', 0)] careful 1",
    ]
    assert [r.levelname for r in records] == ["TRACE", "WARNING"]  # without logging.addLevelName
    for record in records:
        assert record.__dict__["worker"] == "w1"
        assert record.__dict__["task_key"] == ("x", 0)
        assert record.__dict__["remote_name"] == "tests.task"


def test_emit_respects_the_manager_level(caplog: pytest.LogCaptureFixture) -> None:
    captured = _captured_log()
    caplog.set_level(logging.WARNING, logger=REMOTE_LOGGER)
    emit_task_log(captured, key="x", worker="w1", jobname="job", logdir=None)
    assert [r.levelno for r in caplog.records if r.name == REMOTE_LOGGER] == [logging.WARNING]


def test_emit_prefixes_every_output_line(capsys: pytest.CaptureFixture[str]) -> None:
    captured = _captured_log()
    emit_task_log(captured, key="x", worker="w1", jobname="job", logdir=None)
    out, err = capsys.readouterr()
    assert out == "[worker w1] [task 'x'] line 1\n[worker w1] [task 'x'] line 2\n"
    assert err.endswith("[worker w1] [task 'x'] problem\n")


def test_logdir_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logdir = str(tmp_path)
    captured = _captured_log()
    emit_task_log(captured, key=("x", 0), worker="w1", jobname="job", logdir=logdir)
    emit_task_log(TaskLog(stdout="second\n"), key=("x", 0), worker="w2", jobname="job", logdir=logdir)
    emit_task_log(TaskLog(), key="nothing", worker="w2", jobname="job", logdir=logdir)  # empty: no file
    capsys.readouterr()
    (name,) = os.listdir(logdir)
    assert name == f"job.{safe_task_name(('x', 0))}.log" and name.startswith("job.x_0-") and name.endswith(".log")
    assert os.path.join(logdir, name) == task_log_path(logdir, "job", ("x", 0))
    with open(os.path.join(logdir, name), encoding="utf-8") as file:
        text = file.read()
    lines = text.splitlines()
    assert lines[0].startswith("=== [worker w1] [task ('x', 0)] ")
    assert lines[1].endswith(" TRACE tests.task: tracing")
    assert lines[2].endswith(" WARNING tests.task: careful 1")
    assert lines[3:8] == ["--- stdout ---", "line 1", "line 2", "--- stderr ---", "problem"]
    assert lines[8].startswith("=== [worker w2] [task ('x', 0)] ") and lines[9:] == ["--- stdout ---", "second"]


def test_distinct_keys_get_distinct_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logdir = str(tmp_path)
    for key in ("1", 1, "a/b", "a_b", "../x"):
        emit_task_log(TaskLog(stdout=f"{key!r}\n"), key=key, worker="w", jobname="j/k", logdir=logdir)
    names = sorted(os.listdir(logdir))
    assert len(names) == 5 and all(name.startswith("j_k.") for name in names)
    assert all("/" not in name and not name.startswith(".") for name in names)
    assert len(safe_task_name("y" * 500)) < 80


def test_unwritable_logdir_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = os.path.join(str(tmp_path), "missing")
    emit_task_log(TaskLog(stdout=""), key="x", worker="w", jobname="j", logdir=missing)  # empty: nothing to write
    emit_task_log(TaskLog(records=[], stderr="e"), key="x", worker="w", jobname="j", logdir=missing)
    warnings = [r for r in caplog.records if r.name == "dask_redisparam.logs"]
    assert len(warnings) == 1 and "cannot append the log of task 'x'" in warnings[0].getMessage()

"""log=True: each task's log records and output reach the manager (and logdir files); failing tasks' too."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable

import pytest

from dask_redisparam import RedisParam
from tests import tasks


def test_logs_and_prints_reach_the_manager(
    url_param: Callable[..., RedisParam],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
) -> None:
    with url_param(1, log=True, threshold="WARN", logdir=str(tmp_path)) as param:
        worker = param.worker_ids()[0]
        with caplog.at_level(logging.DEBUG, logger="dask_redisparam.remote"):
            assert param({"hello": (tasks.log_and_print, "hi")}, "hello") == "hi"
            with pytest.raises(RuntimeError, match="failed after logging ciao"):
                param({"bye": (tasks.log_and_print, "ciao", True)}, "bye")
    records = [r for r in caplog.records if r.name == "dask_redisparam.remote"]
    assert [(r.levelname, r.task_key, r.worker) for r in records] == [  # type: ignore[attr-defined]
        ("WARNING", "hello", worker),
        ("WARNING", "bye", worker),
    ]
    assert "logged: hi" in records[0].getMessage() and f"[worker {worker}]" in records[0].getMessage()
    out = capsys.readouterr().out
    assert f"[worker {worker}] [task 'hello'] printed: hi" in out
    assert f"[worker {worker}] [task 'bye'] printed: ciao" in out
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(name.endswith(".log") for name in files)
    text = "".join(p.read_text() for p in tmp_path.iterdir())
    assert "logged: hi" in text and "printed: ciao" in text


def test_threshold_filters_and_log_off_captures_nothing(
    url_param: Callable[..., RedisParam], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="dask_redisparam.remote"):
        with url_param(1, log=True, threshold="ERROR") as param:
            param({"x": (tasks.log_and_print, "quiet")}, "x")
        with url_param(1) as param:
            param({"y": (tasks.log_and_print, "off")}, "y")
    assert [r for r in caplog.records if r.name == "dask_redisparam.remote"] == []

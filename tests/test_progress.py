"""Progress bars: the text fallback, tqdm when installed, and the dask callback (no Redis, no scheduler needed)."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from dask.local import get_sync

from dask_redisparam import progress
from dask_redisparam.progress import (
    Progress,
    ProgressCallback,
    TextProgress,
    format_elapsed,
    make_progress,
    tqdm_available,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_bar_reaches_100_percent() -> None:
    out = io.StringIO()
    bar = make_progress(5, use_tqdm=False, file=out)
    assert isinstance(bar, TextProgress)
    for _ in range(5):
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[" + " " * 40 + "] | 0% Completed | ")
    assert lines[-1].startswith("[" + "#" * 40 + "] | 100% Completed | ")
    assert sum("100%" in line for line in lines) == 1  # close() does not repeat the final line


def test_text_bar_writes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with make_progress(2, "load", use_tqdm=False) as bar:
        bar.update(1)
        bar.update(1)
    out, err = capsys.readouterr()
    assert out == "" and "load: [" in err and "| 100% Completed |" in err


def test_text_bar_partial_and_throttled() -> None:
    out = io.StringIO()
    bar = TextProgress(10, file=out, width=10, min_interval=3600)
    bar.update(4)  # throttled: only the initial line so far
    assert out.getvalue().count("\n") == 1
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("[####      ] | 40% Completed | ")
    bar.update(6)  # after close: ignored
    bar.close()
    assert "100%" not in out.getvalue()


def test_counter_mode() -> None:
    out = io.StringIO()
    with make_progress(None, use_tqdm=False, file=out) as counter:
        for _ in range(3):
            counter.update()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("iteration: 1 | ")
    assert lines[-1].startswith("iteration: 3 | ")


def test_set_total_turns_a_counter_into_a_bar() -> None:
    out = io.StringIO()
    bar = make_progress(None, use_tqdm=False, file=out)
    bar.update(2)
    bar.set_total(4)
    bar.update(2)
    bar.close()
    assert "| 50% Completed |" in out.getvalue() and "| 100% Completed |" in out.getvalue()


def test_terminal_redraws_one_line() -> None:
    out = Terminal()
    with TextProgress(2, file=out, min_interval=0) as bar:
        bar.update()
        bar.update()
    text = out.getvalue()
    assert text.startswith("\r[") and text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 4  # initial, 50%, 100%, final


def test_context_manager_closes_on_error() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with make_progress(4, use_tqdm=False, file=out) as bar:
            bar.update()
            raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("[##########")  # 25%, drawn by close()


def test_zero_total_is_complete() -> None:
    out = io.StringIO()
    make_progress(0, use_tqdm=False, file=out).close()
    assert "100% Completed" in out.getvalue()


def test_format_elapsed() -> None:
    assert format_elapsed(0.04) == "0.0s"
    assert format_elapsed(61.25) == "1m 01.2s"
    assert format_elapsed(7322) == "2h 02m 02.0s"


def test_tqdm_or_fallback() -> None:
    out = io.StringIO()
    bar = make_progress(3, "tasks", use_tqdm=True, file=out)
    if tqdm_available():
        assert not isinstance(bar, TextProgress)
        bar.update(2)
        bar.set_total(4)
        bar.update(2)
        bar.close()
        assert "tasks" in out.getvalue() and "4/4" in out.getvalue()
    else:
        assert isinstance(bar, TextProgress)
        bar.close()


def test_fallback_when_tqdm_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # makes the import raise ImportError
    assert not tqdm_available()
    bar = make_progress(3, use_tqdm=True, file=io.StringIO())
    assert isinstance(bar, TextProgress) and isinstance(bar, Progress)
    bar.close()


def _state(finished: int, waiting: int) -> dict[str, Any]:
    return {
        "ready": [],
        "waiting": {f"w{i}": set() for i in range(waiting)},
        "running": set(),
        "finished": {f"f{i}" for i in range(finished)},
    }


def test_callback_with_fake_state() -> None:
    out = io.StringIO()
    cb = ProgressCallback(use_tqdm=False, file=out)
    state = _state(finished=1, waiting=3)
    cb._start({})
    cb._start_state({}, state)
    assert isinstance(cb.progress, TextProgress)
    assert (cb.progress.n, cb.progress.total) == (1, 4)
    for key in ("w0", "w1", "w2"):
        cb._posttask(key, None, {}, state, 0)
    cb._finish({}, state, False)
    assert cb.progress is None
    lines = out.getvalue().splitlines()
    assert "| 25% Completed |" in lines[0] and "| 100% Completed |" in lines[-1]


def test_callback_without_start_state_counts() -> None:
    out = io.StringIO()
    cb = ProgressCallback(use_tqdm=False, file=out)
    cb._start({})
    cb._posttask("a", None, {}, {}, 0)
    cb._posttask("b", None, {}, {}, 0)
    cb._finish({}, {}, True)
    assert out.getvalue().splitlines()[-1].startswith("iteration: 2 | ")


def test_callback_is_reusable() -> None:
    out = io.StringIO()
    cb = ProgressCallback(use_tqdm=False, file=out)
    for _ in range(2):
        state = _state(finished=0, waiting=1)
        cb._start({})
        cb._start_state({}, state)
        cb._posttask("w0", None, {}, state, 0)
        cb._finish({}, state, False)
    assert out.getvalue().count("| 100% Completed |") == 2


def test_callback_with_dask_local_scheduler() -> None:
    out = io.StringIO()
    dsk = {"a": 1, "b": (sum, ["a", "a"]), "c": (sum, ["a", "b"]), "d": (max, ["b", "c"])}
    with ProgressCallback(use_tqdm=False, file=out):  # active for the computes in the block, as dask's ProgressBar
        assert get_sync(dsk, "d") == 3
    assert out.getvalue().splitlines()[-1].startswith("[" + "#" * 40 + "] | 100% Completed")


def test_module_default_uses_tqdm_only_when_importable() -> None:
    bar = make_progress(1, file=io.StringIO())
    assert isinstance(bar, TextProgress) != tqdm_available()
    bar.close()
    assert progress.make_progress is make_progress

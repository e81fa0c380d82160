"""The timeline of a real run (``RedisParam.timeline()``) and its Gantt chart (``plot_timeline``)."""

from __future__ import annotations

import builtins
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import matplotlib.colors
import pytest
from matplotlib.figure import Figure

from dask_redisparam import RedisParam, TaskErrors
from dask_redisparam.manager.options import TimelineRecord
from dask_redisparam.timeline import FAILED_COLOR, OTHER_COLOR, PALETTE, plot_timeline
from tests.tasks import fail, sleep_then_pid

NTASKS = 12


def test_timeline_of_a_real_run_and_its_chart(url_param: Callable[..., RedisParam], tmp_path: pathlib.Path) -> None:
    dsk = {("sleep", i): (sleep_then_pid, 0.05, i) for i in range(NTASKS)}
    keys = list(dsk)
    with url_param(2) as param:
        pids = param(dsk, keys)
        workers = param.worker_ids()
        records = param.timeline()
    assert len(pids) == NTASKS

    assert len(records) == NTASKS, records
    assert sorted(r.key for r in records) == sorted(keys)
    assert all(isinstance(r, TimelineRecord) for r in records)
    assert {r.worker for r in records} <= set(workers)
    for r in records:
        assert r.ok
        assert r.start <= r.end
        assert r.end - r.start >= 0.04  # the task slept 0.05 s (two clocks of one machine)

    png = tmp_path / "t.png"
    ax = plot_timeline(records, path=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(ax.patches) == NTASKS
    lanes = [label.get_text() for label in ax.get_yticklabels()]
    assert lanes == sorted({r.worker for r in records})
    assert len(ax.get_yticks()) == len(lanes)
    origin = min(r.start for r in records)
    assert min(bar.get_x() for bar in ax.patches) == pytest.approx(0.0)
    assert max(bar.get_x() + bar.get_width() for bar in ax.patches) == pytest.approx(
        max(r.end for r in records) - origin
    )
    assert ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_legend() is not None


def test_timeline_marks_failed_tasks(url_param: Callable[..., RedisParam]) -> None:
    dsk: dict[Any, Any] = {"good": (sleep_then_pid, 0.01), "bad": (fail, "no")}
    with url_param(1, stop_on_error=False) as param:
        with pytest.raises(TaskErrors):
            param(dsk, ["good", "bad"])
        records = param.timeline()
    assert {r.key: r.ok for r in records} == {"good": True, "bad": False}
    ax = plot_timeline(records)
    colors = {tuple(matplotlib.colors.to_rgba(c)) for c in (PALETTE[0], FAILED_COLOR)}
    assert {tuple(bar.get_facecolor()) for bar in ax.patches} == colors
    assert "1 failed" in ax.get_title()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["good", "failed"]


def test_plot_timeline_colours_by_prefix_in_order_of_first_start() -> None:
    n = len(PALETTE) + 2  # two prefixes more than there are colours: they are "other"
    records = [((f"p{i:02d}-1a2b", j), f"w{j}", float(i), i + 0.5, True) for i in range(n) for j in range(2)]
    records.reverse()  # the order of the records does not matter, the first start does
    ax = plot_timeline(records)
    rgba = [tuple(bar.get_facecolor()) for bar in ax.patches]
    by_prefix = {records[k][0][0].split("-")[0]: rgba[k] for k in range(len(records))}
    assert [by_prefix[f"p{i:02d}"] for i in range(len(PALETTE))] == [matplotlib.colors.to_rgba(c) for c in PALETTE]
    assert by_prefix[f"p{n - 1:02d}"] == by_prefix[f"p{n - 2:02d}"] == matplotlib.colors.to_rgba(OTHER_COLOR)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == [f"p{i:02d}" for i in range(len(PALETTE))] + ["other"]
    assert ax.get_legend().get_title().get_text() == "task prefix"


def test_plot_timeline_hand_made_records_on_given_axes(tmp_path: pathlib.Path) -> None:
    ax = Figure().add_subplot()
    records = [("k1", "w-b", 5.0, 6.0, True), ("k2", "w-a", 5.5, 5.5, True), ("k3", "w-b", 6.0, 7.5, False)]
    assert plot_timeline(records, ax=ax, path=tmp_path / "given.png") is ax
    assert (tmp_path / "given.png").stat().st_size > 0
    assert [label.get_text() for label in ax.get_yticklabels()] == ["w-a", "w-b"]
    assert [(bar.get_x(), bar.get_width()) for bar in ax.patches] == [(0.0, 1.0), (0.5, 0.0), (1.0, 1.5)]


def test_plot_timeline_no_records() -> None:
    ax = plot_timeline([])
    assert len(ax.patches) == 0
    assert "0 task(s)" in ax.get_title()


def test_plot_timeline_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_timeline([])


def test_plot_timeline_touches_no_global_matplotlib_state(tmp_path: pathlib.Path) -> None:
    """No pyplot, no backend switch: safe in a script without a display, in a thread, or next to a GUI."""
    code = f"""
import sys
from dask_redisparam.timeline import plot_timeline
plot_timeline([("a", "w", 0.0, 1.0, True)], path={str(tmp_path / "x.png")!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported (it owns the global backend and figures)"
print("ok")
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert (tmp_path / "x.png").stat().st_size > 0

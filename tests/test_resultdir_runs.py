"""resultdir: requested values are saved as they are computed; a re-run after a crash skips what was saved."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from dask_redisparam import ConfigurationError, RedisParam
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.resultdir import ResultDir, ResultRef
from tests import tasks

SCRIPT = """
import sys
from dask_redisparam import RedisParam
from tests import tasks
counter, resultdir, url = sys.argv[1:4]
dsk = {("t", i): (tasks.counted_slow_inc, counter, i, 0.05) for i in range(100)}
with RedisParam(2, url=url, resultdir=resultdir) as p:
    print("started", flush=True)
    print(sum(p(dsk, list(dsk))), flush=True)
"""


def test_killed_manager_rerun_skips_saved_results(redis_address: RedisAddress, tmp_path: pathlib.Path) -> None:
    counter, resultdir = tmp_path / "count", tmp_path / "results"
    resultdir.mkdir()
    url = redis_address.to_url(show_password=True)
    argv = [sys.executable, "-c", SCRIPT, str(counter), str(resultdir), url]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert first.stdout is not None and first.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while len(ResultDir(str(resultdir)).keys()) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the manager and its local workers
    first.wait()
    first.stdout.close()
    saved = len(ResultDir(str(resultdir)).keys())
    assert 30 <= saved < 100
    runs_before = len(counter.read_text().split())
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-1] == str(sum(range(1, 101)))
    reran = len(counter.read_text().split()) - runs_before
    assert reran <= 100 - saved  # the saved tasks were not executed again
    assert len(ResultDir(str(resultdir)).keys()) == 100


def test_return_results_false_gives_references(url_param: Callable[..., RedisParam], tmp_path: pathlib.Path) -> None:
    with url_param(1, resultdir=str(tmp_path)) as param:
        refs = param({("a", i): (tasks.inc, i) for i in range(3)}, [("a", i) for i in range(3)], return_results=False)
    assert all(isinstance(r, ResultRef) for r in refs)
    assert [r.load() for r in refs] == [1, 2, 3]


def test_missing_resultdir_is_an_error_before_anything_runs(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigurationError, match="resultdir"):
        RedisParam(1, resultdir=str(tmp_path / "nope"))

"""resultdir by task identity: another process finds what one saved, also where dask's keys are random
(dask.array's ``finalize-hlgfinalizecompute-<hex>``); ``iterate`` writes and reuses it; ``resultdir_all`` saves
every task (done-when 4 of issue 14). Executions are counted through a file the tasks append to."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Callable

from dask_redisparam import RedisParam
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.resultdir import INDEX, ResultDir
from tests import tasks
from tests.conftest import CliWorkers

SCRIPT = """
import operator, sys
import dask.array as da
from dask_redisparam import RedisParam
from tests import tasks
url, jobname, resultdir, counter = sys.argv[1:5]
with RedisParam(jobname=jobname, is_worker=False, url=url, resultdir=resultdir) as p:
    x = da.ones((40, 40), chunks=10).map_blocks(tasks.counted_block, path=counter)
    print(float(x.sum().compute(scheduler=p)))
    print(p.iterate(iter(range(4)), tasks.counted_inc_item, reduce=operator.add, path=counter))
"""


def _count(counter: pathlib.Path) -> int:
    """Task executions: lines of the counter, but not map_blocks's calls as it builds the graph."""
    lines = counter.read_text().splitlines() if counter.exists() else []
    return sum(line not in ("(0, 0)", "(1, 1)") for line in lines)


def _compute(param: RedisParam, counter: pathlib.Path) -> tuple[float, int]:
    """What SCRIPT does, here."""
    import operator

    import dask.array as da

    x = da.ones((40, 40), chunks=10).map_blocks(tasks.counted_block, path=str(counter))
    return float(x.sum().compute(scheduler=param)), param.iterate(
        iter(range(4)), tasks.counted_inc_item, reduce=operator.add, path=str(counter)
    )


def test_a_second_process_runs_nothing_and_saves_nothing_new(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers], tmp_path: pathlib.Path
) -> None:
    cli_workers(1)
    resultdir, counter = tmp_path / "results", tmp_path / "count"
    resultdir.mkdir()
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, resultdir=str(resultdir)) as param:
        assert _compute(param, counter) == (1600.0, 10)  # this process: dask.array's keys are its own
    assert _count(counter) == 16 + 4  # 16 blocks, 4 items
    files = sorted(p.name for p in resultdir.iterdir())
    index = (resultdir / INDEX).read_text()
    assert len(files) == 1 + 1 + 4  # the index, the sum, the items
    assert all(len(line.split("\t")[0]) == 32 for line in index.splitlines())  # identity hex TAB repr(key)
    argv = [sys.executable, "-c", SCRIPT, url, jobname, str(resultdir), str(counter)]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["1600.0", "10"]
    assert _count(counter) == 20  # no task ran in the other process
    assert sorted(p.name for p in resultdir.iterdir()) == files and (resultdir / INDEX).read_text() == index


def test_resultdir_all_saves_every_task_and_reuses_intermediates(
    url_param: Callable[..., RedisParam], tmp_path: pathlib.Path
) -> None:
    from dask import delayed

    counter = str(tmp_path / "count")

    def graph() -> object:  # impure delayed: new random keys each time
        first = delayed(tasks.counted_inc)(counter, 1)
        return delayed(tasks.counted_inc)(counter, first)

    (tmp_path / "r").mkdir()
    with url_param(1, resultdir=str(tmp_path / "r"), resultdir_all=True) as param:
        assert param.get(*_graph_and_key(graph())) == 3
        assert _count(tmp_path / "count") == 2 and len(ResultDir(str(tmp_path / "r"))) == 2  # every task
        assert param.get(*_graph_and_key(delayed(tasks.add)(graph(), 10))) == 13
        assert _count(tmp_path / "count") == 2  # both came from the directory
        assert len(ResultDir(str(tmp_path / "r"))) == 3


def _graph_and_key(value: object) -> tuple[object, object]:
    return value.__dask_graph__(), value.key  # type: ignore[attr-defined]


def test_requested_keys_only_by_default_and_map_reuses_its_chunks(
    url_param: Callable[..., RedisParam], tmp_path: pathlib.Path
) -> None:
    dsk = {"a": (tasks.inc, 1), "b": (tasks.inc, "a"), "c": (tasks.add, "a", "b")}
    results, counter = tmp_path / "r", tmp_path / "count"
    results.mkdir()
    with url_param(1, resultdir=str(results), stop_on_error=False) as param:
        assert param(dsk, "c") == 5
        assert ResultDir(str(results)).keys() == ["c"]
        assert param.map(tasks.counted_inc_item, [1, 2, "x", 4], path=str(counter), return_exceptions=True)[:2] == [
            2,
            3,
        ]
        assert _count(counter) == 4 and len(ResultDir(str(results))) == 1 + 3  # the chunk that failed is not saved
        again = param.map(tasks.counted_inc_item, [1, 2, "x", 4], path=str(counter), return_exceptions=True)
        assert again[:2] == [2, 3] and again[3] == 5 and isinstance(again[2], Exception)
        assert _count(counter) == 4 + 1  # only the failed element ran again

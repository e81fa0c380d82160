"""A notebook kernel that dies mid-cell on the durable local mode loses nothing: the same notebook run again in a
fresh kernel resumes from the values the dead run left in the durable server (issue 14, done-when 7).

The notebook (written here, into a temporary directory) computes a dask.array of :data:`CHUNKS` chunks on
``RedisParam(durable=True, state_dir=...)``; each chunk's task sleeps and appends a line to a side file (the
count of executions, kept outside the project). The test SIGKILLs the kernel when about half of them are in the
file, then runs the notebook again in a fresh kernel: the exact result, at most the unfinished and in-flight tasks
executed again, and the cell says that it resumed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from dask_redisparam.worker import durable
from tests.conftest import wait_until

CHUNKS = 200
CHUNK = 10
WORKERS = 2
EXPECTED = 2 * sum(range(CHUNKS * CHUNK))

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernel spec that runs *this* interpreter (as in ``tests/test_notebooks.py``)."""
    write_kernel_spec(path=str(tmp_path / "jupyter" / "kernels" / "python3"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "python3"


@pytest.fixture
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("nbst") / "state")
    yield path
    if os.path.isdir(path):
        durable.stop_durable(path, timeout=10.0)


def notebook(state_dir: str, side: Path, pidfile: Path) -> Any:
    cells = [
        f"""
        import os, time
        import dask.array as da
        from dask_redisparam import RedisParam

        STATE_DIR, SIDE = {state_dir!r}, {str(side)!r}
        with open({str(pidfile)!r}, "w") as fh:
            fh.write(str(os.getpid()))
        """,
        """
        def slow_double(block):
            time.sleep(0.03)
            with open(SIDE, "a") as fh:
                fh.write(f"{block[0]}\\n")
            return block * 2
        """,
        f"""
        p = RedisParam({WORKERS}, durable=True, state_dir=STATE_DIR)
        x = da.arange({CHUNKS * CHUNK}, chunks={CHUNK}).map_blocks(slow_double, dtype=int)
        print("total", int(x.sum().compute(scheduler=p)))
        """,
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source).strip()) for source in cells]
    return nb


def lines(side: Path) -> list[str]:
    return side.read_text().split() if side.exists() else []


def outputs(nb: Any, stream: str) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type == "stream" and out.name == stream
    )


def test_a_killed_kernel_is_resumed_by_the_same_notebook(kernel_name: str, state_dir: str, tmp_path: Path) -> None:
    side, pidfile = tmp_path / "executions.txt", tmp_path / "kernel.pid"
    first = notebook(state_dir, side, pidfile)
    client = NotebookClient(first, timeout=60, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}})
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()  # this thread's own, closed after
        try:
            loop.run_until_complete(client.async_execute())
        except BaseException as e:  # the kernel's death: nbclient's DeadKernelError
            failure.append(e)
        finally:
            loop.close()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        assert wait_until(lambda: len(lines(side)) >= CHUNKS // 2, 60, interval=0.005), (
            f"only {len(lines(side))} executions; stderr: {outputs(first, 'stderr')}"
        )
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        at_kill = len(set(lines(side)))
    finally:
        runner.join(30)
    assert not runner.is_alive() and failure, "the kernel's death went unnoticed"
    assert at_kill < CHUNKS, "the cell finished before the kill: nothing to resume"
    record = durable.read_record(state_dir)
    assert record is not None and record.alive(), "the durable server died with the kernel"

    # what the dead run's workers were holding finishes; then the same notebook runs again, in a fresh kernel
    before, deadline = -1, time.monotonic() + 30
    while before != len(lines(side)) and time.monotonic() < deadline:
        before = len(lines(side))
        time.sleep(0.3)
    second = notebook(state_dir, side, pidfile)
    NotebookClient(
        second, timeout=60, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    out, err = outputs(second, "stdout"), outputs(second, "stderr")
    assert f"total {EXPECTED}" in out, (out, err)
    executions = lines(side)[before:]
    assert len(executions) <= CHUNKS - at_kill + WORKERS, (len(executions), at_kill)  # unfinished + in flight
    assert set(lines(side)) == {str(i * CHUNK) for i in range(CHUNKS)}  # every chunk ran, in one run or the other
    print(f"killed at {at_kill} of {CHUNKS} executions, {before} before the rerun, {len(executions)} in the rerun")
    said = re.search(r"resumed (\d+) of (\d+) tasks from run", err)
    assert said is not None, f"the cell does not say it resumed; stderr: {err!r}"
    assert 0 < int(said.group(1)) <= int(said.group(2))
    assert durable.read_record(state_dir) is not None and record.server == durable.read_record(state_dir).server
    assert time.time() - record.started < 120

"""The tutorial notebooks run top to bottom (with ``nbclient``, in a fresh kernel, cwd ``notebooks/``) and show what
they promise. They are stored without outputs; this test executes them."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 120

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``python3`` kernel spec that runs *this* interpreter, found first through ``JUPYTER_PATH``.

    Whatever kernels the machine has (none in a fresh CI, or one of another Python), the notebooks then run where
    the package and its test extras are installed; nothing is written outside the temporary directory.
    """
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(path=str(jupyter_dir / "kernels" / "python3"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter_dir))
        from jupyter_client.kernelspec import find_kernel_specs

        assert find_kernel_specs()["python3"] == str(jupyter_dir / "kernels" / "python3")
        yield "python3"


def execute(name: str, kernel_name: str) -> tuple[Any, float]:
    """Run a notebook in a fresh kernel with ``notebooks/`` as cwd; return it (with outputs) and the seconds taken."""
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{name} has outputs"
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    started = time.monotonic()
    client.execute()
    return nb, time.monotonic() - started


def text(nb: Any, stream: str = "stdout") -> str:
    """Everything the notebook printed on one stream."""
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == stream
    )


def images(nb: Any, source_contains: str) -> int:
    """How many PNG images the code cells whose source contains ``source_contains`` displayed."""
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code" and source_contains in cell.source
        for out in cell.outputs
    )


def test_quickstart(kernel_name: str) -> None:
    nb, seconds = execute("01-quickstart.ipynb", kernel_name)
    out = text(nb)
    assert "20 tasks of 2000 replicates each" in out
    assert "2 workers on unix:" in out
    assert "95% CI of the mean: [" in out
    low, high = (float(v) for v in out.split("95% CI of the mean: [")[1].split("]")[0].split(", "))
    assert 1.0 < low < 1.3 < high < 1.6, (low, high)  # the sample's mean is about 1.30
    assert "identical: True" in out
    assert "rng_seed=7 draws the same numbers: False" in out
    assert "100%" in text(nb, "stderr")  # progressbar=True: a text bar ("100% Completed") or tqdm's
    assert images(nb, "ax.hist(") == 1
    assert images(nb, "plot_timeline(records)") == 1
    assert seconds < 90, seconds


def test_worker_pool(kernel_name: str) -> None:
    nb, seconds = execute("02-worker-pool.ipynb", kernel_name)
    out = text(nb)
    assert "server on 127.0.0.1:" in out
    assert "sum of squares below 10**6: 333332833333500000" in out
    assert "workers 2" in out  # the second worker joined during the compute
    assert "done, squares = [0, 1, 4, 9, 16, 25]" in out
    assert images(nb, "plot_timeline(records)") == 1
    assert "ID" in out and "CURRENT" in out and "workers: 2" in out  # the status table, during a run
    assert "asked 2 workers to stop; their exit codes: [0, 0]; live workers now: []" in out
    assert "server running: False" in out
    everything = out + text(nb, "stderr") + str([cell.outputs for cell in nb.cells if cell.cell_type == "code"])
    assert "redis://" not in everything and "requirepass" not in everything  # no URL with the password shown
    assert seconds < 90, seconds


def test_errors_and_redo(kernel_name: str) -> None:
    nb, seconds = execute("03-errors-and-redo.ipynb", kernel_name)
    out = text(nb)
    assert "1 remote error(s), keys: 'sqrt-1'; 1 unevaluated" in out
    assert "TypeError: must be real number, not str" in out
    assert "results:     {'sqrt-0': 1.0, 'sqrt-2': 1.7320508075688772}" in out
    assert "unevaluated: ['total']" in out
    assert "is_ok:  [True, False, True]" in out
    assert "total = 4.146264" in out  # 1 + sqrt(2) + sqrt(3)
    assert "calls during the redo: ['2']" in out
    assert "redo: [1.0, 1.4142135623730951, 1.7320508075688772]" in out
    assert "calls: 3 in the first map, ['2'] in the redo" in out
    assert images(nb, "plot_timeline(p.timeline())") == 1
    assert seconds < 60, seconds


def test_datasets(kernel_name: str) -> None:
    nb, seconds = execute("04-datasets.ipynb", kernel_name)
    out = text(nb)
    assert "workers: 2" in out
    graph_bytes = int(out.split("its graph pickles to ")[1].split(" bytes")[0])
    assert graph_bytes < 10_000, graph_bytes  # four small references, not 32 MB
    assert "value bytes this kernel received: " in out
    assert int(out.split("value bytes this kernel received: ")[1].split()[0]) < 10_000
    mean = out.split("mean in the first kernel: ")[1].split()[0]
    assert 19.9 < float(mean) < 20.1
    assert "temperatures: dask.array.core.Array, 32,00" in out  # 32 MB of values (and their small headers)
    assert "units: builtins.dict, " in out
    assert "datasets seen by the second kernel: ['temperatures', 'units']" in out
    assert "a Array of shape (2000, 2000)" in out
    assert f"mean in the second kernel: {mean}" in out  # the same values, the same sum
    assert int(out.split("value bytes the second kernel received: ")[1].split()[0]) < 10_000
    assert "units: {'temperature': 'degC', 'grid': [2000, 2000]}" in out
    assert "datasets after unpublish: {}" in out
    assert "stopped" in out
    assert "redis://" not in out + text(nb, "stderr")  # the URL with its password is never shown
    assert "Warning" not in text(nb, "stderr")
    assert seconds < 90, seconds


def test_notebooks_are_stored_without_outputs() -> None:
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01-quickstart.ipynb", "02-worker-pool.ipynb", "03-errors-and-redo.ipynb", "04-datasets.ipynb"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (name, cell.id)

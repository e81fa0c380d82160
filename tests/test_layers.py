"""The package's layers hold at run time: no import cycle, and a worker process loads each module once.

``lint-imports`` (ci/lint.sh, the contracts in pyproject.toml) checks that each layer imports only the layers
below it; a layers contract does not see a cycle inside one layer (``manager.state`` <-> ``manager.options``),
so the first test builds the package's whole import graph from the source, imports inside functions included,
and finds its cycles. Imports under ``if TYPE_CHECKING:`` never run and do not count.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from dask_redisparam.config.address import RedisAddress
from tests.conftest import left_keys

PACKAGE = Path(__file__).resolve().parents[1] / "dask_redisparam"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return found


def _imports(path: Path) -> set[str]:
    """The package modules that ``path`` imports when it runs (at import time or later, in a function)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dask_redisparam")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("dask_redisparam"):
                continue
            for alias in node.names:  # `from . import keys` imports the module dask_redisparam.backend.keys
                found.add(f"{target}.{alias.name}" if _is_module(f"{target}.{alias.name}") else target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time."""
    return {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself): Tarjan's."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_lazy_imports_and_skips_type_only_ones() -> None:
    graph = import_graph()
    assert "dask_redisparam.manager.mapping" in graph["dask_redisparam.param_scheduling"]  # inside RedisParam.map
    assert "dask_redisparam.worker.loop" in graph["dask_redisparam.cli.worker"]  # inside the worker command
    assert "dask_redisparam.backend.keys" in graph["dask_redisparam.backend.client"]  # from . import keys, lua
    assert "dask_redisparam.param" not in graph["dask_redisparam.manager.mapping"]  # if TYPE_CHECKING only
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_runs() -> None:
    assert cycles(import_graph()) == []


def test_importing_the_package_leaves_the_docs_tools_out() -> None:
    code = "import sys, dask_redisparam; print(sorted(m for m in sys.modules if m.startswith('dask_redisparam._docs')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


_RECORD_MODULES = """
import atexit, json, os, sys

def _record():
    modules = {name: [getattr(module, "__file__", None), id(module)] for name, module in list(sys.modules.items())}
    path = os.path.join(os.environ["DRP_TEST_MODULES_DIR"], f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump({"argv": sys.argv, "modules": modules}, f)

atexit.register(_record)
"""


def test_a_worker_process_imports_each_module_once(
    redis_address: RedisAddress, jobname: str, rclient: redis.Redis, tmp_path: Path
) -> None:
    """``python -m dask_redisparam.worker``: its supervisor and its worker child load every module once, under its
    own name (``worker/__main__.py`` runs as ``__main__`` only: nothing imports it)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_RECORD_MODULES, encoding="utf-8")
    records = tmp_path / "modules"
    records.mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
        DRP_TEST_MODULES_DIR=str(records),
        REDISPARAM_URL=redis_address.to_url(show_password=True),
        REDISPARAM_JOBNAME=jobname,
    )
    done = subprocess.run(
        [sys.executable, "-m", "dask_redisparam.worker", "--burst"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr
    processes = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(records.glob("*.json"))]
    assert any("--child" in process["argv"] for process in processes), processes  # the supervisor's worker ran
    entry = str(PACKAGE / "worker" / "__main__.py")
    for process in processes:
        files: dict[str, dict[int, str]] = {}  # file -> module object -> a name it has in sys.modules
        for name, (file, ident) in sorted(process["modules"].items()):
            if file and Path(file).resolve().is_relative_to(PACKAGE):  # (multiprocessing adds __mp_main__, an alias)
                files.setdefault(str(Path(file).resolve()), {}).setdefault(ident, name)
        twice = {file: sorted(names.values()) for file, names in files.items() if len(names) > 1}
        assert twice == {}, process["argv"]
        assert list(files.get(entry, {0: "__main__"}).values()) == ["__main__"], process["argv"]
        if "--child" in process["argv"]:
            assert "dask_redisparam.worker.loop" in process["modules"]
    assert left_keys(rclient, jobname) == []

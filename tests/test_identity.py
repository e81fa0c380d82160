"""Stable task identities (manager/identity.py, manager/encode.py): stable across processes, sensitive to what
changes a result, unstable literals reported, long chains, duplicates told apart (no Redis needed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from operator import add
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
from dask import delayed

from dask_redisparam.manager.graph import prepare_graph
from dask_redisparam.manager.identity import IDENTITY_BYTES, Identities, split_name

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import dask, dask.array as da, dask.bag as db, dask.dataframe as dd, pandas as pd
from dask import delayed
from dask.local import get_sync
from dask_redisparam.manager.graph import prepare_graph, flatten_keys

out = {}
def capture(name):
    def get(dsk, keys, **kwargs):
        g = prepare_graph(dsk, keys)
        ids = g.identities
        out[name] = {
            "requested": [ids.of[k].hex() for k in flatten_keys(keys)],
            "all": sorted(v.hex() for v in ids.of.values()),
            "unstable": sorted(map(str, ids.unstable.values())),
            "tasks": len(g.nodes),
        }
        return get_sync(dsk, keys)
    return get

def inc(x):
    return x + 1

def noarg():
    return 1

x = da.ones((20, 20), chunks=5)
dask.compute((x + 1).sum(), scheduler=capture("array"))
df = pd.DataFrame({"a": [1, 2, 3, 4] * 5, "b": range(20), "s": list("abcde") * 4})
ddf = dd.from_pandas(df, npartitions=3)
dask.compute(ddf.groupby("a").b.sum(), scheduler=capture("dataframe"))
dask.compute(dd.read_csv(sys.argv[1]).b.sum(), scheduler=capture("read_csv"))
dask.compute(db.from_sequence(range(10), npartitions=3).map(lambda v: v + 1).sum(), scheduler=capture("bag"))
dask.compute(delayed(sum, pure=True)([delayed(inc, pure=True)(i) for i in range(5)]), scheduler=capture("pure"))
dask.compute(delayed(sum)([delayed(inc)(i) for i in range(5)]), scheduler=capture("impure"))
dask.compute([delayed(noarg)() for _ in range(3)], scheduler=capture("duplicates"))
print(json.dumps(out))
"""


def _identities_in(seed: str, csv: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(  # type: ignore[return-value]
        [sys.executable, "-c", SCRIPT, str(csv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_identities_are_the_same_in_another_process(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    pd.DataFrame({"a": [1, 2, 1], "b": [1.0, 2.0, 3.0]}).to_csv(csv, index=False)
    procs = [_identities_in(seed, csv) for seed in ("1", "2")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)  # type: ignore[attr-defined]
        assert proc.returncode == 0, err  # type: ignore[attr-defined]
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second = results
    assert sorted(first) == ["array", "bag", "dataframe", "duplicates", "impure", "pure", "read_csv"]
    for name, got in first.items():
        assert got == second[name], name  # another hash seed, the same identities (impure keys differ)
        assert got["unstable"] == [] and len(got["all"]) == got["tasks"], name  # every task has one
        assert len(set(got["all"])) == got["tasks"], name  # all distinct
    assert len(set(first["duplicates"]["requested"])) == 3  # three equal impure calls, told apart


def _ids(dsk: dict[Any, Any], keys: list[Any]) -> Identities:
    return prepare_graph(dsk, keys).identities


def inc(x: int) -> int:
    return x + 1


def test_a_literal_an_input_or_the_function_changes_the_identity() -> None:
    base = _ids({"x": 1, "y": (inc, "x")}, ["y"]).of
    assert len(base["y"]) == IDENTITY_BYTES
    assert _ids({"x": 2, "y": (inc, "x")}, ["y"]).of["y"] != base["y"]  # an input
    assert _ids({"x": 1, "y": (inc, "x"), "z": (add, "y", 1)}, ["z"]).of["y"] == base["y"]  # not its dependents
    assert _ids({"x": 1, "y": (abs, "x")}, ["y"]).of["y"] != base["y"]  # the function
    assert _ids({"y": (add, 1, 2)}, ["y"]).of["y"] != _ids({"y": (add, 1, 3)}, ["y"]).of["y"]  # a literal
    assert _ids({"y": (add, 1, 2)}, ["y"]).of["y"] != _ids({"y": (add, 1, 2.0)}, ["y"]).of["y"]  # its type


def _compiled(source: str, filename: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["f"]


def test_the_function_body_counts_its_file_and_line_do_not() -> None:
    def identity_of(func: Any) -> bytes:
        return _ids({"k": (func, 3)}, ["k"]).of["k"]

    plain = identity_of(_compiled("def f(x):\n    return x + 1\n", "/tmp/ipykernel_1/1.py"))
    # another notebook kernel: another file name, other line numbers, the same code
    assert identity_of(_compiled("\n\n\ndef f(x):\n    return x + 1\n", "/tmp/ipykernel_2/7.py")) == plain
    assert identity_of(_compiled("def f(x):\n    return x + 2\n", "/tmp/ipykernel_1/1.py")) != plain
    scaled = "SCALE = {}\ndef g(x):\n    return x * SCALE\ndef f(x):\n    return g(x) + 1\n"
    one, two = (identity_of(_compiled(scaled.format(n), "cell.py")) for n in (1, 2))
    assert one != two  # a global that a helper function refers to
    # pure delayed names its keys f-<tokenize(f, args)>, and tokenize pickles the code with its file name
    first, other = (_compiled("\n" * n + "def f(x):\n    return x + 1\n", f"/tmp/ipykernel_{n}/1.py") for n in (1, 2))
    calls = [delayed(func, pure=True)(1) for func in (first, other)]
    assert calls[0].key != calls[1].key
    ids = [prepare_graph(c.__dask_graph__(), [c.key]).identities.of[c.key] for c in calls]
    assert ids[0] == ids[1]


def test_non_root_key_tokens_do_not_count_root_tokens_do() -> None:
    a = _ids(
        {"x": (add, 1, 2), "y-0123456789abcdef0123456789abcdef": (inc, "x")}, ["y-0123456789abcdef0123456789abcdef"]
    )
    b = _ids(
        {"x": (add, 1, 2), "y-fedcba9876543210fedcba9876543210": (inc, "x")}, ["y-fedcba9876543210fedcba9876543210"]
    )
    assert list(a.of.values()) == list(b.of.values())
    c = _ids({"r-0123456789abcdef0123456789abcdef": (add, 1, 2)}, ["r-0123456789abcdef0123456789abcdef"])
    d = _ids({"r-fedcba9876543210fedcba9876543210": (add, 1, 2)}, ["r-fedcba9876543210fedcba9876543210"])
    assert list(c.of.values()) != list(d.of.values())  # a root's token may carry what is in no argument
    e = _ids({"r-6f1d3c2a-9b7e-4c1d-8a2b-0e9f8d7c6b5a": (add, 1, 2)}, ["r-6f1d3c2a-9b7e-4c1d-8a2b-0e9f8d7c6b5a"])
    f = _ids({"r-1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d": (add, 1, 2)}, ["r-1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"])
    assert list(e.of.values()) == list(f.of.values())  # but not a uuid4 (impure delayed)
    assert (
        split_name("finalize-hlgfinalizecompute-0123456789abcdef0123456789abcdef")[0] == "finalize-hlgfinalizecompute"
    )


def test_a_files_modification_time_changes_read_csv(tmp_path: Path) -> None:
    import dask.dataframe as dd

    csv = tmp_path / "data.csv"
    pd.DataFrame({"a": [1, 2]}).to_csv(csv, index=False)

    def identity() -> bytes:
        total = dd.read_csv(csv).a.sum()
        (key,) = total.__dask_keys__()
        return prepare_graph(total.__dask_graph__(), [key]).identities.of[key]

    before = identity()
    assert identity() == before
    os.utime(csv, (1_600_000_000, 1_600_000_000))
    assert identity() != before


def test_an_unstable_literal_makes_its_task_and_dependents_unstable(caplog: pytest.LogCaptureFixture) -> None:
    dsk = {"ok": (add, 1, 2), "bad": (sorted, {"a", "b"}), "after": (add, "bad", "ok"), "obj": (id, object())}
    with caplog.at_level(logging.INFO, logger="dask_redisparam.manager.graph"):
        ids = _ids(dsk, ["after", "obj"])
    assert sorted(ids.of) == ["ok"]
    assert ids.unstable == {
        "bad": "a set of str (its order changes with hash randomisation)",
        "after": "depends on 'bad'",
        "obj": "no stable encoding for a builtins.object",
    }
    (record,) = [r for r in caplog.records if "stable identity" in r.getMessage()]
    assert "3 tasks" in record.getMessage() and "'bad'" in record.getMessage() and "set of str" in record.getMessage()


def test_numbers_arrays_and_frames_are_encoded_by_value() -> None:
    def one(value: Any) -> bytes:
        return _ids({"k": (repr, value)}, ["k"]).of["k"]

    assert one(np.arange(4)) == one(np.arange(4)) != one(np.arange(4.0)) != one(np.arange(5.0))
    assert one(np.arange(4).reshape(2, 2)) != one(np.arange(4))
    assert one(pd.DataFrame({"a": [1]})) == one(pd.DataFrame({"a": [1]})) != one(pd.DataFrame({"a": [2]}))
    assert one({1, 2, 3}) == one({3, 2, 1})  # a set of numbers: its order does not matter
    assert one(np.float32(1)) != one(np.float64(1)) != one(1.0)


def test_a_chain_of_10000_and_duplicates() -> None:
    chain: dict[Any, Any] = {"c0": 1, **{f"c{i}": (add, f"c{i - 1}", 1) for i in range(1, 10_000)}}
    ids = _ids(chain, ["c9999"])
    assert len(ids.of) == 10_000 and len(set(ids.of.values())) == 10_000
    twins = _ids({"a": (add, 1, 1), "b": (add, 1, 1), "c": (add, "a", "b")}, ["c"])
    assert twins.of["a"] != twins.of["b"]  # equal tasks, told apart in a deterministic walk
    assert _ids({"a": (add, 1, 1), "b": (add, 1, 1), "c": (add, "a", "b")}, ["c"]).of == twins.of


def test_find_adds_known_keys_before_culling() -> None:
    seen: list[Identities] = []

    def find(identities: Identities) -> list[str]:
        seen.append(identities)
        return ["y"]

    g = prepare_graph({"x": 1, "y": (inc, "x"), "z": (inc, "y")}, ["z"], find=find)
    assert len(seen) == 1 and sorted(seen[0].of) == ["x", "y", "z"]  # every key needed, before culling
    assert g.known == {"y"} and sorted(g.nodes) == ["y", "z"]  # the walk stopped at y
    assert g.identities is seen[0]


def test_dask_delayed_graph_with_nested_containers() -> None:
    calls = [delayed(inc)(i) for i in range(3)]
    total = delayed(sum)(calls)
    (graph,) = [total.__dask_graph__()]
    ids = prepare_graph(graph, [total.key]).identities
    again = delayed(sum)([delayed(inc)(i) for i in range(3)])
    assert ids.of[total.key] == prepare_graph(again.__dask_graph__(), [again.key]).identities.of[again.key]
    other = delayed(sum)([delayed(inc)(i) for i in (0, 2, 1)])  # a list: order counts
    assert ids.of[total.key] != prepare_graph(other.__dask_graph__(), [other.key]).identities.of[other.key]
    assert dask.compute(total, scheduler="sync") == (6,)


def test_the_packages_own_code_is_named_not_read_with_its_state() -> None:
    """A map chunk's task (run_chunk, whose globals reach the random streams' module state) has the same identity
    before and after this process drew from a seeded stream: the package's code counts by name and version."""
    from dask._task_spec import Task

    from dask_redisparam import rng
    from dask_redisparam.manager.identity import task_identities
    from dask_redisparam.manager.mapping import run_chunk

    def identity() -> bytes:
        task = Task("map-x", run_chunk, abs, {}, 0, [(-1,)], (None, False))
        return task_identities({"map-x": task}, ["map-x"]).of["map-x"]

    before = identity()
    rng.seed_task(7, "x")
    rng.task_rng().random()
    assert identity() == before

"""Results saved to a directory (R's resultdir): files, atomicity, index, validation (no Redis needed)."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dask_redisparam.errors import ConfigurationError, SerializationError
from dask_redisparam.resultdir import INDEX, ResultDir, ResultRef, key_token


def test_round_trip_numpy_and_tuple_keys(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    array = np.arange(12.0).reshape(3, 4)
    ref = rd.save(("chunk", 0, 1), array)
    rd.save("name", {"a": [1, 2]})
    rd.save(7, None)
    assert isinstance(ref, ResultRef) and ref.key == ("chunk", 0, 1)
    np.testing.assert_array_equal(rd.load(("chunk", 0, 1)), array)
    np.testing.assert_array_equal(ref.load(), array)
    assert rd.load("name") == {"a": [1, 2]} and rd.load(7) is None
    assert rd.has(7) and 7 in rd and not rd.has(("chunk", 0, 2)) and len(rd) == 3
    assert sorted(map(repr, rd.keys())) == sorted(map(repr, [("chunk", 0, 1), "name", 7]))
    assert os.path.basename(ref.path) == key_token(("chunk", 0, 1)) + ".pkl"


def test_file_holds_key_then_value(tmp_path: Path) -> None:
    ref = ResultDir(tmp_path).save(("x", 1), [1, 2])
    with open(ref.path, "rb") as file:
        assert pickle.load(file) == ("x", 1)
        assert pickle.load(file) == [1, 2]


def test_missing_key(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    with pytest.raises(KeyError):
        rd.load("missing")
    with pytest.raises(KeyError):
        rd.ref("missing")


def test_overwrite_keeps_one_file(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    rd.save("x", 1)
    rd.save("x", 2)
    assert rd.load("x") == 2 and rd.keys() == ["x"]
    assert sorted(os.listdir(tmp_path)) == sorted([INDEX, key_token("x") + ".pkl"])


def test_no_temporary_files_remain(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    for i in range(5):
        rd.save(("k", i), list(range(i)))
    names = os.listdir(tmp_path)
    assert len(names) == 6 and all(n == INDEX or n.endswith(".pkl") for n in names)
    assert not any(n.startswith(".") for n in names)


def test_crash_before_replace_leaves_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = ResultDir(tmp_path)

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # e.g. the manager is interrupted between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        rd.save("x", 1)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [] and not rd.has("x") and rd.keys() == []


def test_unpicklable_value_leaves_no_file(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    with pytest.raises(SerializationError, match="'x'"):
        rd.save("x", threading.Lock())
    assert os.listdir(tmp_path) == []


def test_a_reader_never_sees_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = ResultDir(tmp_path)
    seen: list[list[str]] = []
    real_replace = os.replace

    def watching_replace(src: str, dst: str) -> None:
        seen.append(sorted(os.listdir(tmp_path)))  # the whole value is written, the final name is not there yet
        assert not rd.has("x") and os.path.getsize(src) > 1000
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    rd.save("x", b"v" * 10_000)
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].endswith(".tmp")
    assert rd.load("x") == b"v" * 10_000


def test_index_content(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    rd.save(("x", 0), 1)
    rd.save("tab\there", 2)
    rd.save(("x", 0), 3)  # a duplicate line
    with open(tmp_path / INDEX, encoding="utf-8") as file:
        lines = file.read().splitlines()
    assert lines == [
        f"{key_token(('x', 0))}\t('x', 0)",
        f"{key_token('tab' + chr(9) + 'here')}\t'tab\\there'",
        f"{key_token(('x', 0))}\t('x', 0)",
    ]
    assert rd.index() == {key_token(("x", 0)): "('x', 0)", key_token("tab\there"): "'tab\\there'"}


def test_index_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    rd.save("a", 1)
    with open(tmp_path / INDEX, "ab") as file:
        file.write(b"0123abc\t'b")  # a write cut short
    assert rd.index() == {key_token("a"): "'a'"}
    rd.save("c", 3)  # starts on a new line
    assert rd.index() == {key_token("a"): "'a'", key_token("c"): "'c'"}
    with open(tmp_path / INDEX, "a", encoding="utf-8") as file:
        file.write("garbage without a tab\n\n")
    assert len(rd.index()) == 2


def test_keys_after_reopening(tmp_path: Path) -> None:
    first = ResultDir(str(tmp_path))
    keys: list[Any] = [("a", 1), ("a", 2), "b", b"bytes", 3.5]
    for key in keys:
        first.save(key, repr(key))
    os.remove(tmp_path / INDEX)  # the files are authoritative
    (tmp_path / "notes.txt").write_text("not a result")
    second = ResultDir(tmp_path)
    assert sorted(map(repr, second.keys())) == sorted(map(repr, keys))
    assert [second.load(key) for key in keys] == [repr(key) for key in keys]
    assert second.index() == {}


def test_result_ref(tmp_path: Path) -> None:
    rd = ResultDir(tmp_path)
    ref = rd.save(("x", 0), [1])
    copy = pickle.loads(pickle.dumps(ref))
    assert copy == ref == rd.ref(("x", 0)) and copy.load() == [1]
    assert ref != rd.save(("x", 1), [1])
    assert repr(ref) == f"ResultRef(key=('x', 0), path={ref.path!r})"
    assert len(pickle.dumps(rd.save("big", np.zeros(100_000)))) < 500  # the value stays on disk


def test_tokens_are_stable_and_distinct() -> None:
    assert key_token(("x", 0)) == "17acd306ae530586efac52534b216e66"
    tokens = {key_token(k) for k in ("1", 1, 1.0, b"1", ("1",), (1,))}
    assert len(tokens) == 6
    assert key_token(frozenset({1})) == key_token(frozenset({1}))  # not a dask key: through dask's tokenize


def test_missing_directory(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigurationError, match=r"resultdir=.*nope.* does not exist"):
        ResultDir(missing)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConfigurationError, match=r"resultdir=.*file.* is not a directory"):
        ResultDir(path)


def test_unwritable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_write(path: str, mode: int) -> bool:
        return not mode & os.W_OK

    monkeypatch.setattr(os, "access", no_write)  # the tests run as root
    with pytest.raises(ConfigurationError, match=r"resultdir=.* is not a writable directory") as info:
        ResultDir(tmp_path)
    assert str(tmp_path) in str(info.value) and isinstance(info.value, ValueError)

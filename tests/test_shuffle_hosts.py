"""Shuffles on workers that share no disk: exact with the task-based shuffle, refused at once with dask's disk one.

Each "host" is a worker daemon in a private mount namespace with a tmpfs of its own on ``/tmp`` (as separate
machines are, and as network namespaces are not), reaching Redis over TCP on 127.0.0.1. dask's disk shuffle
(partd) writes each piece to the ``/tmp`` of the worker that runs the task, so on this pool every host would see
only its own part of the rows. One pool of two such hosts serves the whole module; a second pool of two daemons
that share ``/tmp`` serves the ``shared_filesystem=True`` case. Needs root (``unshare -m``, ``mount``), as CI has.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dask
import dask.bag as db
import dask.dataframe as dd
import pandas as pd
import pytest
import redis

import dask_redisparam
from dask_redisparam import RedisParam, UnsafeShuffle
from dask_redisparam.manager.graph import materialize, prepare_graph
from dask_redisparam.manager.shuffle import disk_shuffle_key
from dask_redisparam.worker.server import EmbeddedRedis

from .conftest import wait_for_workers
from .tasks_collections import tmp_device

ROWS = 10_000
PDF = pd.DataFrame({"a": range(ROWS), "b": [i * 7919 % 1000 for i in range(ROWS)]})
RIGHT = pd.DataFrame({"b": range(1000), "c": [i * 3 for i in range(1000)]})
ISOLATE = """set -e
if [ -n "$2" ]; then mount --bind /tmp /mnt; fi
mount -t tmpfs tmpfs /tmp
if [ -n "$2" ]; then mkdir -p "$2" && mount --bind "/mnt${2#/tmp}" "$2" && umount -l /mnt; fi
exec dask-redisparam-worker --jobname "$0" --id "$1" --quiet
"""
"""A fresh tmpfs on ``/tmp``; when the project itself lies under ``/tmp`` (a CI clone), that one directory is bound
back (through ``/mnt``, in this namespace only), so that the worker can still import the package and the tests."""
ROOT = pathlib.Path(dask_redisparam.__file__).resolve().parents[1]
KEEP = str(ROOT) if ROOT.is_relative_to("/tmp") else ""


def group_key(x: int) -> int:
    return x % 97


# ---------------------------------------------------------------------------------------------- the operations
# Each builds its collection (inside the caller's dask config: a bag picks its method when groupby is called) and
# returns it with a function that puts a result in a canonical form, and the expected canonical result.


def _frame() -> dd.DataFrame:
    return dd.from_pandas(PDF, npartitions=8)


def set_index() -> tuple[Any, Callable[[Any], Any], Any]:
    def canonical(out: pd.DataFrame) -> pd.DataFrame:
        assert out.index.is_monotonic_increasing
        return out.reset_index().sort_values(["b", "a"]).reset_index(drop=True)

    return _frame().set_index("b"), canonical, canonical(PDF.set_index("b").sort_index())


def merge() -> tuple[Any, Callable[[Any], Any], Any]:
    def canonical(out: pd.DataFrame) -> pd.DataFrame:
        return out.sort_values("a").reset_index(drop=True)[["a", "b", "c"]]

    merged = _frame().merge(dd.from_pandas(RIGHT, npartitions=3), on="b")
    return merged, canonical, canonical(PDF.merge(RIGHT, on="b"))


def groupby_split_out() -> tuple[Any, Callable[[Any], Any], Any]:
    def canonical(out: pd.Series) -> pd.Series:
        return out.sort_index()

    return _frame().groupby("b").a.sum(split_out=4), canonical, canonical(PDF.groupby("b").a.sum())


def bag_groupby(shuffle: str | None = None) -> tuple[Any, Callable[[Any], Any], Any]:
    def canonical(out: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
        return sorted((key, sorted(values)) for key, values in out)

    expected: dict[int, list[int]] = {}
    for x in range(ROWS):
        expected.setdefault(group_key(x), []).append(x)
    grouped = db.from_sequence(range(ROWS), npartitions=8).groupby(group_key, shuffle=shuffle)
    return grouped, canonical, canonical(list(expected.items()))


OPERATIONS = {"set_index": set_index, "merge": merge, "groupby_split_out": groupby_split_out, "bag": bag_groupby}


def build(name: str, method: str) -> tuple[Any, Callable[[Any], Any], Any]:
    """The operation ``name`` with the shuffle ``method`` (for a dataframe, read when it is computed)."""
    return bag_groupby(method) if name == "bag" else OPERATIONS[name]()


def assert_exact(name: str, canonical: Callable[[Any], Any], expected: Any, out: Any) -> None:
    if name == "bag":
        assert canonical(out) == expected
    elif isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(canonical(out), expected, check_names=False)
    else:
        pd.testing.assert_frame_equal(canonical(out), expected)


# ---------------------------------------------------------------------------------------------- the pools
class Pool:
    """Worker daemons on one job; ``isolated`` ones each in a private mount namespace with its own ``/tmp``."""

    def __init__(self, url: str, isolated: bool, n: int = 2) -> None:
        self.url, self.jobname = url, f"shuffle-{'iso' if isolated else 'shared'}-{uuid.uuid4().hex[:6]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_", "DASK_"))}
        env.pop("TMPDIR", None)  # partd writes under tempfile.gettempdir(): /tmp, the namespace's own tmpfs
        env["REDISPARAM_URL"] = url
        self.processes: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            wid = f"{'host' if isolated else 'shared'}{i}"
            argv = ["dask-redisparam-worker", "--jobname", self.jobname, "--id", wid, "--quiet"]
            if isolated:  # the same command, in a mount namespace of its own with a fresh /tmp
                argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", ISOLATE, self.jobname, wid, KEEP]
            self.processes.append(subprocess.Popen(argv, env=env))

    def param(self, **kwargs: Any) -> RedisParam:
        return RedisParam(jobname=self.jobname, url=self.url, **kwargs)

    def close(self) -> None:
        for proc in self.processes:
            proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    """Redis over TCP: the isolated hosts cannot see a Unix socket under the test's /tmp."""
    with EmbeddedRedis(tcp=True) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    with redis.Redis(host="127.0.0.1", port=server.port, password=server.address.password) as c:
        yield c


@pytest.fixture(scope="module")
def pools(server: EmbeddedRedis) -> Iterator[tuple[Pool, Pool]]:
    url = server.address.to_url(show_password=True)
    isolated, shared = Pool(url, isolated=True), Pool(url, isolated=False)
    try:
        for pool in (isolated, shared):
            wait_for_workers(server.address, pool.jobname, 2)
        yield isolated, shared
    finally:
        isolated.close()
        shared.close()


@pytest.fixture(scope="module")
def isolated(pools: tuple[Pool, Pool]) -> Iterator[RedisParam]:
    """A started manager (is_worker=False) of the two hosts that share no disk."""
    with pools[0].param(is_worker=False) as p:
        # the pool is what it claims: two /tmp file systems, neither of them the manager's
        devices = set(p({("d", i): (tmp_device, 0.3) for i in range(8)}, [("d", i) for i in range(8)]))
        assert len(devices) == 2 and os.stat("/tmp").st_dev not in devices, devices
        yield p


def tasks_done(client: redis.Redis, jobname: str) -> int:
    """Messages completed by the workers of ``jobname`` so far (their ``tasks`` counters)."""
    return sum(int(client.hget(key, "tasks") or 0) for key in client.scan_iter(f"drp:{{{jobname}}}:worker:*"))


def lpush_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


# ---------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", OPERATIONS)
def test_task_shuffles_are_exact_across_hosts(isolated: RedisParam, name: str) -> None:
    """With ``as_default()`` (the task-based shuffle), every operation is exact on hosts that share no disk."""
    with isolated.as_default():
        assert dask.config.get("dataframe.shuffle.method") == "tasks"
        collection, canonical, expected = OPERATIONS[name]()  # a bag's groupby picks its method here
        (out,) = dask.compute(collection)
    assert_exact(name, canonical, expected, out)


@pytest.mark.parametrize("name", OPERATIONS)
def test_disk_shuffle_is_refused_at_once(isolated: RedisParam, client: redis.Redis, name: str) -> None:
    """The disk method on hosts that share no disk: a clear error, before any message is sent."""
    before, pushes = tasks_done(client, isolated.jobname), lpush_calls(client)
    with dask.config.set({"dataframe.shuffle.method": "disk"}):
        collection, _, _ = build(name, "disk")
        start = time.monotonic()
        with pytest.raises(UnsafeShuffle) as info:
            dask.compute(collection, scheduler=isolated)
        elapsed = time.monotonic() - start
    assert elapsed < 5, elapsed  # at once (typically a few ms), not after the tasks ran
    message = str(info.value)
    for part in ('"dataframe.shuffle.method": "tasks"', 'shuffle="tasks"', "shared_filesystem=True", "as_default()"):
        assert part in message, (part, message)
    assert repr(isolated.jobname) in message and "is_worker=False" in message
    assert isinstance(info.value, ValueError)  # a ConfigurationError
    assert lpush_calls(client) == pushes, "a task message was sent"
    assert tasks_done(client, isolated.jobname) == before
    assert client.llen(f"drp:{{{isolated.jobname}}}:queue") == 0
    assert not list(client.scan_iter(f"drp:{{{isolated.jobname}}}:r*"))  # no run, no redo: keys


def test_explicit_disk_setting_wins_over_as_default(isolated: RedisParam) -> None:
    with dask.config.set({"dataframe.shuffle.method": "disk"}), isolated.as_default():
        assert dask.config.get("dataframe.shuffle.method") == "disk"
        with pytest.raises(UnsafeShuffle):
            _frame().set_index("b").compute()
    assert dask.config.get("dataframe.shuffle.method", None) is None
    assert dask.config.get("scheduler", None) is not isolated


@pytest.mark.parametrize("name", ["set_index", "bag"])
def test_declared_shared_filesystem_allows_the_disk_shuffle(pools: tuple[Pool, Pool], name: str) -> None:
    """Two daemons that do share /tmp: refused without the declaration, exact with ``shared_filesystem=True``."""
    shared = pools[1]
    with dask.config.set({"dataframe.shuffle.method": "disk"}):
        collection, canonical, expected = build(name, "disk")
        with shared.param(is_worker=False) as p, pytest.raises(UnsafeShuffle):
            dask.compute(collection, scheduler=p)
        with shared.param(is_worker=False, shared_filesystem=True) as p:
            (out,) = dask.compute(collection, scheduler=p)
        assert_exact(name, canonical, expected, out)
        with dask.config.set({"redisparam.shared_filesystem": True}), shared.param(is_worker=False) as p:
            assert p.shared_filesystem is True
            (out,) = dask.compute(collection, scheduler=p)
        assert_exact(name, canonical, expected, out)


def test_local_workers_allow_the_disk_shuffle(server: EmbeddedRedis, pools: tuple[Pool, Pool]) -> None:
    """A param's own local workers share its disk; daemons of other hosts on the same job do not."""
    url = server.address.to_url(show_password=True)
    with dask.config.set({"dataframe.shuffle.method": "disk"}):
        collection, canonical, expected = build("set_index", "disk")
        with RedisParam(2, url=url) as p:
            (out,) = dask.compute(collection, scheduler=p)
        assert_exact("set_index", canonical, expected, out)
        with pools[0].param(workers=1) as p, pytest.raises(UnsafeShuffle, match=r"host0, host1"):
            dask.compute(collection, scheduler=p)


def test_detection_on_the_graphs_dask_builds() -> None:
    """Each operation's graph, as dask lowers it, holds a disk-shuffle task with ``disk`` and none with ``tasks``."""
    seen: dict[str, Any] = {}

    def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        seen["key"] = disk_shuffle_key(prepare_graph(dsk, keys))
        return dask.get(materialize(dsk)[0], keys)

    for name in OPERATIONS:
        for method in ("disk", "tasks"):
            with dask.config.set({"dataframe.shuffle.method": method}):
                collection, canonical, expected = build(name, method)
                (out,) = dask.compute(collection, scheduler=get)
            assert (seen["key"] is not None) == (method == "disk"), (name, method)
            assert_exact(name, canonical, expected, out)

"""Sentinel: a primary, two replicas and a Sentinel (real redis-servers on loopback); the primary is SIGKILLed mid-run.

The run finishes exact, with and without ``replicas=1``, and the workers serve the new primary afterwards. A
failover that loses acknowledged writes (the replicas' link frozen first) makes the manager run the lost tasks
again: the result is exact, each task's completion is applied once per run of it. The recovery policy is tested
without I/O too.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dask.callbacks import Callback

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.settings import Settings
from dask_redisparam.errors import AuthenticationFailed, ServerUnavailable
from dask_redisparam.manager.failover import plan_recovery
from dask_redisparam.manager.graph import prepare_graph
from dask_redisparam.manager.options import RunOptions
from dask_redisparam.manager.state import RunState
from dask_redisparam.wire.protocol import OK, Completion, Outcome, dumps_completion

from . import tasks
from .conftest import CliWorkers, wait_for_workers, wait_until
from .sentinels import SentinelGroup

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    g = SentinelGroup(replicas=2, sentinels=1)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def frozen_group() -> Iterator[SentinelGroup]:
    g = SentinelGroup(replicas=2, sentinels=1, proxy=True)
    try:
        yield g
    finally:
        g.close()


def layered(n: int, seconds: float) -> tuple[dict[Any, Any], Any, int]:
    """``n`` leaves of ``seconds``, pairwise sums of them, and a total: the graph, its top key, the exact value."""
    graph: dict[Any, Any] = {("leaf", i): (tasks.slow_inc, i, seconds) for i in range(n)}
    for i in range(0, n, 2):
        graph[("pair", i)] = (tasks.add, ("leaf", i), ("leaf", i + 1))
    graph["total"] = (tasks.sum_all, *[("pair", i) for i in range(0, n, 2)])
    return graph, "total", sum(i + 1 for i in range(n))


class Counting(Callback):  # type: ignore[misc]
    """Counts the completions the manager applied, per key."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: collections.Counter[Any] = collections.Counter()

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker: Any) -> None:
        self.finished[key] += 1


def compute_in_thread(
    param: RedisParam, graph: dict[Any, Any], key: Any, cb: Any = None
) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            with cb or Callback():
                out["value"] = param(graph, key)
        except BaseException as e:  # noqa: B036 - handed to the test
            out["error"] = e
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("replicas", [0, 1])
def test_primary_killed_mid_run(group: SentinelGroup, replicas: int, caplog: pytest.LogCaptureFixture) -> None:
    job = "t-" + uuid.uuid4().hex[:10]
    caplog.set_level(logging.WARNING)
    with RedisParam(2, jobname=job, url=group.url, replicas=replicas) as param:
        graph, top, expected = layered(80, 0.1)
        thread, out = compute_in_thread(param, graph, top)
        time.sleep(1.5)
        assert thread.is_alive()
        old = group.kill_primary()
        killed = time.monotonic()
        new = group.wait_failover(old)
        thread.join(60)
        assert not thread.is_alive(), "the run did not finish within 60 s of the kill"
        assert "error" not in out, out.get("error")
        assert out["value"] == expected
        print(f"failover {old} -> {new}; run done {time.monotonic() - killed:.1f} s after the kill")
        assert any("failover" in r.getMessage() for r in caplog.records)
        # the workers serve the new primary: another compute
        graph2 = {("x", i): (tasks.inc, i) for i in range(20)}
        assert list(param(graph2, [("x", i) for i in range(20)])) == [i + 1 for i in range(20)]
        assert param.backend.primary() == f"127.0.0.1:{new}"
        big = {"big": (tasks.make_array, 3 << 20, 2.0), "sum": (tasks.array_sum, "big")}  # large values: parts
        value, total = param(big, ["big", "sum"])
        assert value.nbytes == 3 << 20 and total == 2.0 * (3 << 20) / 8


def test_worker_flags_wait_for_replicas(group: SentinelGroup) -> None:
    """``dask-redisparam-worker --replicas 3 --replicas-timeout 0.2`` against a primary with two replicas: it warns,
    naming how many acknowledged and the primary, and the run finishes."""
    job = "t-" + uuid.uuid4().hex[:10]
    address = RedisAddress.from_url(group.url)
    workers = CliWorkers(address, job, 1, "--replicas", "3", "--replicas-timeout", "0.2")
    try:
        wait_for_workers(address, job, 1)
        with RedisParam(jobname=job, is_worker=False, url=group.url) as param:
            assert param({"a": (tasks.inc, 1)}, "a") == 2
    finally:
        workers.stop()
    log = workers.stderr()
    workers.log.close()
    assert f"only 2 of 3 replica(s) of the primary 127.0.0.1:{group.primary} acknowledged" in log, log[-2000:]


def test_primary_demoted_mid_run(group: SentinelGroup) -> None:
    """``SENTINEL FAILOVER``: the old primary lives on as a replica (``READONLY``); manager and workers leave it."""
    job = "t-" + uuid.uuid4().hex[:10]
    with RedisParam(2, jobname=job, url=group.url) as param:
        graph, top, expected = layered(40, 0.1)
        thread, out = compute_in_thread(param, graph, top)
        time.sleep(1.0)
        old = group.demote_primary()
        new = group.wait_failover(old)
        thread.join(60)
        assert not thread.is_alive() and "error" not in out, out.get("error")
        assert out["value"] == expected
        # the Sentinel turns the old primary into a replica a little later: connections still on it meet READONLY
        assert wait_until(lambda: group.client(old).info("replication")["role"] == "slave", 30)
        assert param({"a": (tasks.inc, 1)}, "a") == 2 and param.backend.primary() == f"127.0.0.1:{new}"


def test_lost_writes_are_run_again(frozen_group: SentinelGroup, caplog: pytest.LogCaptureFixture) -> None:
    """The replicas stop receiving the primary's writes; the run goes on for a second (acknowledged writes: values,
    records, messages, claims), then the primary dies: the new primary misses them, the manager runs them again."""
    group = frozen_group
    assert group.proxy is not None
    job = "t-" + uuid.uuid4().hex[:10]
    caplog.set_level(logging.WARNING)
    with RedisParam(2, jobname=job, url=group.url) as param:
        graph, top, expected = layered(80, 0.1)
        leaves = [("leaf", i) for i in range(80)]  # requested: their values are needed until the end
        counting = Counting()
        thread, out = compute_in_thread(param, graph, [top, *leaves], counting)
        time.sleep(1.0)
        group.proxy.freeze()
        time.sleep(1.0)
        assert thread.is_alive()
        old = group.kill_primary()
        group.wait_failover(old)
        thread.join(60)
        assert not thread.is_alive(), "the run did not finish within 60 s of the kill"
        assert "error" not in out, out.get("error")
        assert list(out["value"]) == [expected, *(i + 1 for i in range(80))]
        lost = [
            r.getMessage() for r in caplog.records if "lost writes" in r.getMessage() or "vanished" in r.getMessage()
        ]
        assert lost, "the manager did not notice the lost writes"
        print("\n".join(lost))
        ran_again = sum(n - 1 for n in counting.finished.values())
        planned = sum(int(m.split(" task(s) run again")[0].rsplit(" ", 1)[1]) for m in lost if "run again" in m)
        assert set(counting.finished) == set(graph)
        assert ran_again == planned  # a completion is applied once per run of its task: only what was lost ran again
        print(f"{ran_again} completion(s) applied again (tasks run again after the failover)")
        assert param(graph, top) == expected  # the pool serves the new primary


def test_sentinel_errors_name_the_sentinels(group: SentinelGroup) -> None:
    wrong = RedisAddress.from_url(group.url.replace("/svc", "/nope"))
    with pytest.raises(ServerUnavailable, match="monitors a service 'nope'"):
        Backend.connect(wrong, wait=5)  # a wrong name is not waited for
    port = group.sentinels[0]
    nobody = RedisAddress.from_url(f"redis+sentinel://127.0.0.1:{port + 1}/svc")
    with pytest.raises(ServerUnavailable, match=r"no Sentinel of service 'svc' answers at 127\.0\.0\.1"):
        Backend.connect(nobody)
    guarded = group.start_sentinel("requirepass s3cret\n")
    url = f"redis+sentinel://127.0.0.1:{guarded}/svc"
    with pytest.raises(AuthenticationFailed, match="sentinel_password") as info:
        Backend.connect(RedisAddress.from_url(url + "?sentinel_password=wrong"))
    assert "wrong" not in str(info.value)
    backend = Backend.connect(RedisAddress.from_url(url + "?sentinel_password=s3cret"))
    assert backend.ping() and backend.primary() == f"127.0.0.1:{group.primary}"
    backend.close()


def test_wait_for_replicas_warns_or_fails(group: SentinelGroup, caplog: pytest.LogCaptureFixture) -> None:
    """``replicas`` more than there are: each WAIT times out; the worker warns, or the run fails naming the task."""
    job = "t-" + uuid.uuid4().hex[:10]
    caplog.set_level(logging.WARNING)
    with RedisParam(1, jobname=job, url=group.url, replicas=3, replicas_timeout=0.2) as param:
        assert param({"a": (tasks.inc, 1)}, "a") == 2
    with RedisParam(1, jobname=job, url=group.url, replicas=3, replicas_timeout=0.2, replicas_required=True) as param:
        from dask_redisparam.errors import ReplicationFailed

        with pytest.raises(ReplicationFailed, match=r"task 'b'.*by 2 of the 3 replica\(s\).*127\.0\.0\.1:"):
            param({"b": (tasks.inc, 1)}, "b")


# ------------------------------------------------------------------ the policy, without I/O
def _run(graph: dict[Any, Any], keys: list[Any]) -> RunState:
    options = RunOptions.from_settings(Settings(jobname="job", environ={}))
    run = RunState(prepare_graph(graph, keys), options, [], run_id="r1")
    run.start({})
    run.set_workers(2)
    return run


def _complete(run: RunState, msg_id: int) -> None:
    _, keys = run.messages[msg_id]
    outcomes = [Outcome(run.idx[k], OK, None, 8, 0.0, 0.01) for k in keys]
    run.handle(dumps_completion(Completion(msg_id, 0, "w1", outcomes, None), None, "job", "r1"))


def test_plan_recovery_lost_inputs_and_messages() -> None:
    deps = {"a": set(), "b": set(), "c": {"a", "b"}, "d": {"c"}}
    plan = plan_recovery(
        in_flight={3: ["d"], 4: ["x"]},
        found={4},
        resending=set(),
        finished={"a", "b", "c"},
        value_of={"a": ("0",), "b": ("1",), "c": ("2", "~p.0")},
        present={"0", "1", "2"},  # c's part is gone
        needed={"c"},
        held_inline=set(),
        dependencies={**deps, "x": set()},
        literals=set(),
        known=set(),
    )
    assert plan.lost == {"c"} and plan.recompute == {"c"}  # a and b are present: not run again
    assert plan.supersede == [3] and plan.resend == []
    nothing = plan_recovery(
        in_flight={5: ["x"]},
        found=set(),
        resending={5},
        finished=set(),
        value_of={},
        present=set(),
        needed=set(),
        held_inline=set(),
        dependencies={"x": set()},
        literals=set(),
        known=set(),
    )
    assert nothing.empty  # already due to be pushed again


def test_recover_runs_lost_tasks_again_once() -> None:
    graph = {"a": (tasks.inc, 1), "b": (tasks.inc, "a"), "c": (tasks.add, "b", "a"), "d": (tasks.inc, "c")}
    run = _run(graph, ["d"])
    run.options.fuse_chains  # noqa: B018
    commands = run.take_commands()
    assert len(commands.push) == 1  # a
    _complete(run, 0)
    run.take_commands()
    (msg_b,) = [m for m, (_, keys) in run.messages.items() if "b" in keys]
    _complete(run, msg_b)
    commands = run.take_commands()  # c is in flight now, reading a and b
    (msg_c,) = [m for m, (_, keys) in run.messages.items() if "c" in keys]
    fields = {str(run.loc[k]) for k in ("a", "b")}
    # the failover lost b's value and the message of c
    plan, uploads, parts = run.recover(fields - {str(run.loc["b"])}, set())
    assert plan.recompute == {"b"} and plan.supersede == [msg_c] and not uploads
    assert "b" not in run.state["finished"] and run.state["waiting"]["c"] == {"b"}
    commands = run.take_commands()
    assert commands.withdraw  # the superseded message of c, if still queued
    (msg_b2,) = [m for m, (_, keys) in run.messages.items() if "b" in keys]
    late = dumps_completion(
        Completion(msg_c, 0, "w2", [Outcome(run.idx["c"], OK, None, 8, 0.0, 0.01)], None), None, "job", "r1"
    )
    run.handle(late)  # the superseded message's result comes anyway: a repeat, ignored
    assert "c" not in run.state["finished"]
    _complete(run, msg_b2)
    run.take_commands()
    (msg_c2,) = [m for m, (_, keys) in run.messages.items() if "c" in keys]
    _complete(run, msg_c2)
    while len(run.state["finished"]) < len(graph):
        run.take_commands()
        for m in list(run.messages):
            _complete(run, m)
    assert run.state["finished"] == set(graph)
    assert not run.messages
    # a lost message found nowhere is pushed again as it was
    run2 = _run({("x", i): (tasks.inc, i) for i in range(3)}, [("x", i) for i in range(3)])
    pushed = run2.take_commands().push
    plan2, _, _ = run2.recover(set(), {0, 2})
    assert plan2.resend == [1] and run2.take_commands().push == [pushed[1]]


def test_sentinels_and_servers_over_tls(tmp_path: Any) -> None:
    """``rediss+sentinel://``: the Sentinels and the servers speak TLS only; the CA file of the URL verifies both."""
    from .test_tls import make_pki

    pki = make_pki(tmp_path / "pki")
    group = SentinelGroup(replicas=1, sentinels=1, tls=(str(pki.ca), str(pki.server_cert), str(pki.server_key)))
    try:
        job = "t-" + uuid.uuid4().hex[:10]
        with RedisParam(1, jobname=job, url=group.url) as param:
            assert param({"a": (tasks.inc, 1), "b": (tasks.inc, "a")}, "b") == 3
            assert param.backend.primary() == f"127.0.0.1:{group.primary}"
        plain = RedisAddress.from_url(group.url.replace("rediss+", "redis+").split("?")[0])
        with pytest.raises(ServerUnavailable, match="Sentinel"):
            Backend.connect(plain)
    finally:
        group.close()


def test_plan_recovery_uploads_literals_again_and_names_known_values() -> None:
    deps: dict[Any, set[Any]] = {"lit": set(), "kept": set(), "t": {"lit", "kept"}, "u": {"t"}}
    common: dict[str, Any] = dict(
        in_flight={}, found=set(), resending=set(), held_inline=set(), dependencies=deps, literals={"lit"}
    )
    # t's value is lost; its inputs: a large literal (released from Redis) and a known value (from redo=)
    plan = plan_recovery(
        finished={"lit", "kept", "t"}, value_of={"t": ("2",)}, present=set(), needed={"t"}, known={"kept"}, **common
    )
    assert plan.recompute == {"t"} and plan.reupload == {"lit"} and plan.unrecoverable == {"kept"}
    nothing_needed = plan_recovery(
        finished={"lit", "kept", "t"}, value_of={"t": ("2",)}, present=set(), needed=set(), known={"kept"}, **common
    )
    assert nothing_needed.empty  # a lost value nobody needs any more is left alone


class FailAtTheEnd(Callback):  # type: ignore[misc]
    """Freezes the replicas' link once ``freeze_at`` finished, and kills the primary once ``kill_at`` finished (then
    waits for the failover): the manager meets it as it downloads the results."""

    def __init__(self, group: SentinelGroup, freeze_at: Any, kill_at: Any) -> None:
        super().__init__()
        self.group, self.freeze_at, self.kill_at = group, freeze_at, kill_at

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker: Any) -> None:
        if key == self.freeze_at and self.group.proxy is not None:
            self.group.proxy.freeze()
        if key == self.kill_at:
            self.group.wait_failover(self.group.kill_primary())
            self.kill_at = None


def test_failover_while_downloading(frozen_group: SentinelGroup, caplog: pytest.LogCaptureFixture) -> None:
    """The last task finished, its value lost (not replicated), the primary dies as the manager downloads: the run is
    reconciled, what was lost runs again, the download is tried again."""
    job = "t-" + uuid.uuid4().hex[:10]
    caplog.set_level(logging.WARNING)
    with RedisParam(2, jobname=job, url=frozen_group.url) as param:
        graph, top, expected = layered(16, 0.05)
        with FailAtTheEnd(frozen_group, ("pair", 0), top):
            assert param(graph, top) == expected
        messages = [r.getMessage() for r in caplog.records]
        assert any("the end of run" in m and "met a failover" in m for m in messages), messages[-10:]
        assert param({"a": (tasks.inc, 1)}, "a") == 2

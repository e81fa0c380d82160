"""A real 3-primary Redis Cluster (``redis-cli --cluster create``): jobs spread over the primaries, each exact; a slot
migration mid-run is survived; status and the CLI work against the cluster URL; wrong URLs and a short ACL fail
clearly. One cluster for the module (about 2 s to create)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import redis

from dask_redisparam import ConfigurationError, PermissionDenied, RedisParam
from dask_redisparam.backend import Backend, keys
from dask_redisparam.backend.slots import slot_of_job
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers
from tests.rcluster import TestCluster
from tests.test_auth import _rules_for
from tests.test_tls import make_pki

pytestmark = pytest.mark.timeout(120)

PASSWORD = secrets.token_hex(8)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    made = TestCluster(tmp_path_factory.mktemp("cluster"), password=PASSWORD)
    try:
        yield made
    finally:
        made.close()


def _jobs_per_primary(cluster: TestCluster, per_node: int) -> dict[int, list[str]]:
    """Job names, ``per_node`` on each primary (by the slot of their hash tag)."""
    out: dict[int, list[str]] = {port: [] for port in cluster.ports}
    owners = {port: port for port in cluster.ports}
    tag = uuid.uuid4().hex[:6]
    i = 0
    while any(len(names) < per_node for names in out.values()):
        name = f"cl-{tag}-{i}"
        port = owners[cluster.owner(slot_of_job(name))]
        if len(out[port]) < per_node:
            out[port].append(name)
        i += 1
    return out


def _other_keys(cluster: TestCluster, jobname: str) -> list[bytes]:
    """The job's keys but its statistics (kept with a TTL on purpose), on every node."""
    kept = {k.encode() for k in keys.statistics(jobname)}
    return [k for port in cluster.ports for k in cluster.keys_on(port, keys.job_pattern(jobname)) if k not in kept]


def test_six_jobs_each_exact_on_its_primary(cluster: TestCluster) -> None:
    by_node = _jobs_per_primary(cluster, 2)
    jobs = [name for names in by_node.values() for name in names]
    assert len(jobs) == 6
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(jobname: str, seed: int) -> None:
        try:
            with RedisParam(1, jobname=jobname, url=cluster.url) as p:
                x = da.arange(20_000, chunks=2_000) * seed
                total = int(x.sum().compute(scheduler=p))
                incs = p.map(tasks.inc, range(200), tasks=20)
                results[jobname] = (total, incs)
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(job, i + 1)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    for i, job in enumerate(jobs):
        assert results[job] == ((i + 1) * sum(range(20_000)), list(range(1, 201))), job
    # each job's keys (its statistics, kept on purpose) sit on its own primary only, and nothing else is left
    for port, names in by_node.items():
        for job in names:
            assert cluster.keys_on(port, keys.job_pattern(job)), (job, port)
            for other in cluster.ports:
                if other != port:
                    assert cluster.keys_on(other, keys.job_pattern(job)) == [], (job, other)
            assert _other_keys(cluster, job) == [], job
    assert len({port for port, names in by_node.items() if names}) == 3  # spread over the three primaries
    backend = Backend.connect(RedisAddress.from_url(cluster.url))
    try:  # what spans jobs (the dashboard's list of jobs) scans every primary
        assert set(jobs) <= set(backend.job_names())
    finally:
        backend.close()


def test_a_slot_migration_mid_run_is_survived(cluster: TestCluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dask_redisparam.backend.cluster")
    jobname = f"mig-{uuid.uuid4().hex[:6]}"
    slot = slot_of_job(jobname)
    source = cluster.owner(slot)
    target = next(port for port in cluster.ports if port != source)
    nbytes = 1 << 20  # large values: their parts go through the raw-socket paths
    arrays = [dask.delayed(tasks.make_array)(nbytes, float(i)) for i in range(6)]
    sums = [dask.delayed(tasks.array_sum)(a) for a in arrays]
    slow = [dask.delayed(tasks.slow_inc)(i, 0.01) for i in range(200)]
    out: dict[str, Any] = {}
    with RedisParam(1, jobname=jobname, url=cluster.url) as p:
        assert p.map(tasks.inc, range(10)) == list(range(1, 11))  # a worker up, the scripts loaded on the source

        def run() -> None:
            try:
                out["value"] = dask.compute(slow, sums, arrays[-1], scheduler=p)
            except BaseException as e:
                out["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        assert _wait(lambda: len(cluster.keys_on(source, f"drp:{{{jobname}}}:run:*")) >= 2, 20)
        started = time.monotonic()
        moved = cluster.migrate(slot, target, batch=1, pause=0.05)  # key by key: ASK and TRYAGAIN meanwhile
        migrated_in = time.monotonic() - started
        running = thread.is_alive()
        thread.join(60)
        assert "error" not in out, out.get("error")
        incs, totals, last = out["value"]
        assert list(incs) == list(range(1, 201))
        assert list(totals) == [float(i) * (nbytes // 8) for i in range(6)]
        assert isinstance(last, np.ndarray) and last.nbytes == nbytes and float(last[0]) == 5.0
        assert running, f"the run ended before the migration did ({migrated_in:.2f} s, {moved} keys)"
        assert moved >= 3
        assert cluster.owner(slot) == target
        assert f"slot {slot} moved to 127.0.0.1:{target}" in caplog.text  # the manager followed it
        assert p.map(tasks.inc, range(5)) == list(range(1, 6))  # and after it
        assert cluster.keys_on(source, keys.job_pattern(jobname)) == []
    assert _other_keys(cluster, jobname) == []


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_status_and_cli_against_the_cluster(cluster: TestCluster) -> None:
    jobname = f"cli-{uuid.uuid4().hex[:6]}"
    address = RedisAddress.from_url(cluster.url)
    workers = CliWorkers(address, jobname, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    env["REDISPARAM_URL"] = cluster.url
    try:
        assert len(wait_for_workers(address, jobname, 1)) == 1
        with RedisParam(jobname=jobname, is_worker=False, url=cluster.url) as p:
            assert p.map(tasks.inc, range(20)) == list(range(1, 21))
        done = subprocess.run(
            ["dask-redisparam", "status", "--jobname", jobname, "--json", "--rate-window", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert len(status["workers"]) == 1, status
        assert PASSWORD not in done.stdout + done.stderr
        done = subprocess.run(
            ["dask-redisparam", "stop-all", "--jobname", jobname], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert workers.process.wait(30) == 0
        done = subprocess.run(
            ["dask-redisparam", "clean", "--jobname", jobname], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    finally:
        workers.stop()
        workers.log.close()
    assert _other_keys(cluster, jobname) == []


def test_a_cluster_url_at_a_plain_server_and_back(cluster: TestCluster, tmp_path: pathlib.Path) -> None:
    with EmbeddedRedis(tcp=True) as plain:
        url = f"redis+cluster://:{plain.address.password}@127.0.0.1:{plain.port}"
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{plain.port} is not a Redis Cluster node"):
            RedisParam(jobname="x", is_worker=False, url=url).start()
    # a plain URL at a cluster node, for a job whose slot another node serves
    by_node = _jobs_per_primary(cluster, 1)
    port = cluster.ports[0]
    elsewhere = next(names[0] for node, names in by_node.items() if node != port)
    plain_url = f"redis://:{PASSWORD}@127.0.0.1:{port}"
    with pytest.raises(ConfigurationError, match=r"is a node of a Redis Cluster .*redis\+cluster://") as info:
        RedisParam(jobname=elsewhere, is_worker=False, url=plain_url).start()
    assert f"127.0.0.1:{port}" in str(info.value) and PASSWORD not in str(info.value)


def test_the_documented_acl_on_a_cluster(cluster: TestCluster) -> None:
    jobname = f"acl-{uuid.uuid4().hex[:6]}"
    user, password = f"drp-{uuid.uuid4().hex[:6]}", secrets.token_hex(8)
    nodes = [cluster.node(port) for port in cluster.ports]

    def set_rules(without: set[str]) -> None:
        rules = [r for r in _rules_for(jobname, password) if not (r.startswith("+") and r[1:] in without)]
        for node in nodes:
            node.execute_command("ACL", "SETUSER", user, *rules)

    address = RedisAddress.from_url(
        f"redis+cluster://{user}:{password}@" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
    )
    try:
        set_rules(set())
        backend = Backend.connect(address)
        try:
            backend.check_job_access(jobname)
        finally:
            backend.close()
        set_rules({"asking"})
        backend = Backend.connect(address)
        try:
            with pytest.raises(PermissionDenied, match=r"the command\(s\) ASKING that job .* add \+asking"):
                backend.check_job_access(jobname)
        finally:
            backend.close()
        set_rules({"cluster|slots"})
        with pytest.raises(PermissionDenied, match=r"the command CLUSTER SLOTS .* add \+cluster\|slots"):
            Backend.connect(address)
    finally:
        for node in nodes:
            try:
                node.execute_command("ACL", "DELUSER", user)
            except redis.RedisError:
                pass


def test_each_redirection_is_followed_once(cluster: TestCluster) -> None:
    """ASK (a key already moved), TRYAGAIN (a script whose keys are split over the two nodes), MOVED (after the
    migration): each command runs exactly once, where its keys are."""
    jobname = f"ask-{uuid.uuid4().hex[:6]}"
    slot = slot_of_job(jobname)
    source = cluster.owner(slot)
    target = next(port for port in cluster.ports if port != source)
    backend = Backend.connect(RedisAddress.from_url(cluster.url))
    assert backend._cluster is not None
    counts = backend._cluster.redirects
    try:
        for wid in ("w1", "w2"):
            assert backend.register_worker(jobname, wid, {"host": "h"}, 30)
        src, dst = cluster.node(source), cluster.node(target)
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.node_id(source))
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.node_id(target))
        src.execute_command("MIGRATE", "127.0.0.1", target, keys.worker(jobname, "w1"), 0, 5000, "AUTH", PASSWORD)
        assert backend.live_workers(jobname) == ["w1", "w2"]  # EXISTS of w1: ASK; of w2: here
        assert counts["ASK"] >= 1
        assert backend.heartbeat(jobname, "w1", 30, {"host": "h"}) == (True, False)  # a script, by ASK

        def finish() -> None:
            _wait(lambda: counts["TRYAGAIN"] >= 2, 10)  # the script below is being told to try again
            for name in cluster.node(source).execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target, name, 0, 5000, "AUTH", PASSWORD)
            for port in [target, source, *(p for p in cluster.ports if p not in (source, target))]:
                cluster.node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", cluster.node_id(target))

        mover = threading.Thread(target=finish)
        mover.start()
        # the script's keys: a new worker's hash (not on the source) and the set of workers (still there)
        assert backend.register_worker(jobname, "w3", {"host": "h"}, 30)
        mover.join()
        assert counts["TRYAGAIN"] >= 1 and counts["MOVED"] >= 1
        assert backend.live_workers(jobname) == ["w1", "w2", "w3"]
        assert cluster.owner(slot) == target
        assert cluster.keys_on(source, keys.job_pattern(jobname)) == []
        assert len(cluster.keys_on(target, keys.job_pattern(jobname))) == 4
        for wid in ("w1", "w2", "w3"):
            backend.deregister_worker(jobname, wid)
        assert cluster.keys_on(target, keys.job_pattern(jobname)) == []
    finally:
        backend.close()


def test_the_cluster_setting_with_host_and_port(cluster: TestCluster) -> None:
    jobname = f"set-{uuid.uuid4().hex[:6]}"
    port = cluster.ports[1]
    with RedisParam(1, jobname=jobname, host="127.0.0.1", port=port, password=PASSWORD, cluster=True) as p:
        assert p.settings.address.kind == "cluster"
        assert p.map(tasks.inc, range(30), tasks=3) == list(range(1, 31))
    assert _other_keys(cluster, jobname) == []


def test_a_primary_failover_mid_run_is_followed(tmp_path: pathlib.Path) -> None:
    """``CLUSTER FAILOVER`` of the job's primary to its replica during a run: the old primary answers ``MOVED``
    (and unblocks its ``BLMOVE`` callers); manager and workers follow the slot to the new primary, exact."""
    own = TestCluster(tmp_path, password=PASSWORD)
    try:
        jobname = f"fo-{uuid.uuid4().hex[:6]}"
        primary = own.owner(slot_of_job(jobname))
        replica = own.add_replica(primary)
        out: dict[str, Any] = {}
        with RedisParam(1, jobname=jobname, url=own.url) as p:
            assert p.map(tasks.inc, range(10)) == list(range(1, 11))

            def run() -> None:
                try:
                    out["value"] = p.map(tasks.slow_inc, range(300), [0.01] * 300)
                except BaseException as e:
                    out["error"] = e

            thread = threading.Thread(target=run)
            thread.start()
            time.sleep(0.5)
            old = own.failover(replica)
            running = thread.is_alive()
            thread.join(60)
            assert "error" not in out, out.get("error")
            assert out["value"] == list(range(1, 301))
            assert running
            assert old == primary and own.owner(slot_of_job(jobname)) == replica
            assert p.map(tasks.inc, range(5)) == list(range(1, 6))
        assert _other_keys(own, jobname) == []
    finally:
        own.close()


def test_a_cluster_over_tls(tmp_path: pathlib.Path) -> None:
    """``rediss+cluster://``: every node (and the cluster bus) speaks TLS only; the CA file applies to each node."""
    own = TestCluster(tmp_path / "nodes", password=PASSWORD, tls=make_pki(tmp_path / "pki"))
    try:
        assert own.url.startswith("rediss+cluster://")
        jobname = f"tls-{uuid.uuid4().hex[:6]}"
        with RedisParam(1, jobname=jobname, url=own.url) as p:
            assert p.map(tasks.inc, range(40), tasks=4) == list(range(1, 41))
            assert p.settings.address.tls
        assert _other_keys(own, jobname) == []
    finally:
        own.close()

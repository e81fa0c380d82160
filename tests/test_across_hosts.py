"""A compute across four "hosts" (network namespaces): Redis on one, the manager on another, workers on two more;
and across five: a 3-primary Redis Cluster on one, the manager on another, workers on three more."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dask_redisparam.backend.slots import slot_of_job
from dask_redisparam.worker.server import find_redis_server
from tests.netns import TestNetwork
from tests.rcluster import TestCluster

MANAGER = """
import json, os, sys
import dask.array as da
from dask_redisparam import RedisParam
from tests import tasks
with RedisParam(jobname=sys.argv[1], is_worker=False) as p:
    pids = p({("p", i): (tasks.sleep_then_pid, 0.05, i) for i in range(40)}, [("p", i) for i in range(40)])
    x = da.arange(10_000, chunks=1_000)
    total = int((x * 2).sum().compute(scheduler=p))
    print(json.dumps({"pids": list(pids), "total": total, "workers": p.worker_ids(), "me": os.getpid()}))
"""


@pytest.fixture
def network() -> Iterator[TestNetwork]:
    net = TestNetwork(["redis", "manager", "host1", "host2"])
    try:
        yield net
    finally:
        net.close()


def test_compute_across_hosts(network: TestNetwork, tmp_path: pathlib.Path) -> None:
    password = secrets.token_urlsafe(16)
    conf = tmp_path / "redis.conf"
    conf.write_text(f'requirepass "{password}"\n')
    conf.chmod(0o600)
    redis_host = network.addresses["redis"]
    server = network.popen(
        "redis",
        [find_redis_server(), str(conf), "--port", "6379", "--bind", redis_host, "--save", "", "--appendonly", "no"],
        env=os.environ,
        stdout=subprocess.DEVNULL,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    env.update(REDISPARAM_HOST=redis_host, REDISPARAM_PORT="6379", REDISPARAM_PASSWORD=password)
    jobname = "hosts-" + secrets.token_hex(4)
    workers = [
        network.popen(host, ["dask-redisparam-worker", "--jobname", jobname, "--id", host], env=env)
        for host in ("host1", "host2")
    ]
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", network.namespaces["manager"], sys.executable, "-c", MANAGER, jobname],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["total"] == 2 * sum(range(10_000))
        assert sorted(report["workers"]) == ["host1", "host2"]
        hosts = {network.host_of(pid) for pid in report["pids"]}
        assert hosts == {"host1", "host2"}, hosts  # both worker hosts ran tasks, the manager host none
        assert network.host_of(workers[0].pid) == "host1"
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(15) == 0
        server.terminate()
        server.wait(10)


MANAGER_ON_CLUSTER = """
import json, os, sys, time
import dask.array as da
from dask_redisparam import RedisParam
from tests import tasks
with RedisParam(jobname=sys.argv[1], is_worker=False) as p:
    deadline = time.monotonic() + 60
    while len(p.worker_ids()) < int(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = p({("p", i): (tasks.sleep_then_pid, 0.05, i) for i in range(60)}, [("p", i) for i in range(60)])
    x = da.arange(10_000, chunks=1_000)
    total = int((x * 2).sum().compute(scheduler=p))
    print(json.dumps({"pids": list(pids), "total": total, "workers": p.worker_ids(), "me": os.getpid()}))
"""


def test_compute_across_hosts_on_a_cluster(tmp_path: pathlib.Path) -> None:
    """Done when 4 of the issue "Beyond one Redis": a 3-primary Redis Cluster on one host, workers on three more,
    the manager on a fifth; the URL names one seed node only (the others come from the slot map)."""
    hosts = ("host1", "host2", "host3")
    network = TestNetwork(["redis", "manager", *hosts])
    password = secrets.token_urlsafe(16)
    cluster: TestCluster | None = None
    workers: list[subprocess.Popen[str]] = []
    try:
        cluster = TestCluster(
            tmp_path,
            host=network.addresses["redis"],
            ports=[7000, 7001, 7002],
            password=password,
            launch=lambda argv: network.popen("redis", argv, env=os.environ, stdout=subprocess.DEVNULL),
            admin_host=network.namespaces["redis"],
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
        env["REDISPARAM_URL"] = f"redis+cluster://:{password}@{network.addresses['redis']}:7001"
        jobname = "hosts-" + secrets.token_hex(4)
        while 5461 <= slot_of_job(jobname) <= 10922:  # the seed's slots (redis-cli gives the 2nd node the 2nd third)
            jobname = "hosts-" + secrets.token_hex(4)
        workers = [
            network.popen(host, ["dask-redisparam-worker", "--jobname", jobname, "--id", host], env=env)
            for host in hosts
        ]
        done = subprocess.run(
            ["ip", "netns", "exec", network.namespaces["manager"], sys.executable, "-c", MANAGER_ON_CLUSTER, jobname]
            + ["3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["total"] == 2 * sum(range(10_000))
        assert sorted(report["workers"]) == list(hosts)
        ran = {network.host_of(pid) for pid in report["pids"]}
        assert ran == set(hosts), ran  # every worker host ran tasks, the manager's none
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(15) == 0
        if cluster is not None:
            cluster.close()
        network.close()

"""Redis itself fails: restarts with and without persistence, a wrong password, an interrupted manager, a cut
network link between a worker host and Redis."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis

from dask_redisparam import AuthenticationFailed, EmbeddedRedis, RedisParam, RunLost
from dask_redisparam.backend import keys
from dask_redisparam.worker.server import find_redis_server
from tests import tasks
from tests.conftest import CliWorkers, start_manager_process, wait_for_workers
from tests.netns import TestNetwork


def compute_in_thread(param: RedisParam, dsk: dict[Any, Any], out: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(param(dsk, list(dsk)))
        except BaseException as e:  # noqa: B036 - handed to the test
            out.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_redis_restart_with_aof_keeps_the_run(tmp_path: pathlib.Path) -> None:
    jobname = "aof-" + secrets.token_hex(4)
    with EmbeddedRedis(tcp=True, appendonly=True, dir=str(tmp_path)) as server:
        workers = CliWorkers(server.address, jobname, 2)
        try:
            wait_for_workers(server.address, jobname, 2)
            with RedisParam(jobname=jobname, is_worker=False, url=server.url) as param:
                out: list[Any] = []
                dsk = {("t", i): (tasks.slow_inc, i, 0.05) for i in range(60)}
                thread = compute_in_thread(param, dsk, out)
                time.sleep(1.0)
                server.kill()
                time.sleep(0.5)
                server.restart()
                thread.join(60)
                assert out == [tuple(range(1, 61))]
        finally:
            workers.stop()
            workers.log.close()


def test_redis_restart_without_persistence_fails_clearly() -> None:
    jobname = "nopersist-" + secrets.token_hex(4)
    with EmbeddedRedis(tcp=True) as server:
        workers = CliWorkers(server.address, jobname, 1)
        try:
            wait_for_workers(server.address, jobname, 1)
            with RedisParam(jobname=jobname, is_worker=False, url=server.url) as param:
                out: list[Any] = []
                thread = compute_in_thread(param, {("t", i): (tasks.slow_inc, i, 0.1) for i in range(100)}, out)
                time.sleep(1.0)
                server.kill()
                server.restart()
                started = time.monotonic()
                thread.join(40)
                assert time.monotonic() - started < 30
                assert len(out) == 1 and isinstance(out[0], RunLost), out
                assert "lost the state of run" in str(out[0]) and "without persistence" in str(out[0])
        finally:
            workers.stop()
            workers.log.close()


def test_wrong_password_fails_at_once_naming_user_and_server() -> None:
    with EmbeddedRedis(tcp=True) as server:
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed, match=rf"127\.0\.0\.1:{server.port} refused the default user"):
            RedisParam(host="127.0.0.1", port=server.port, password="wrong", is_worker=False).start()
        with pytest.raises(AuthenticationFailed, match="user 'alice'"):
            RedisParam(url=f"redis://alice:wrong@127.0.0.1:{server.port}", is_worker=False).start()
        assert time.monotonic() - started < 1


def test_interrupted_manager_cleans_up(
    redis_address: Any, jobname: str, cli_workers: Any, rclient: redis.Redis
) -> None:
    cli_workers(1)
    proc = start_manager_process(redis_address, jobname, 50)
    assert proc.stdout is not None
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "interrupted"
    assert proc.wait(10) == 0
    proc.stdout.close()
    assert rclient.llen(keys.queue(jobname)) == 0
    time.sleep(0.5)  # tasks that were running finish: their results must not re-create the run's lease
    left = list(rclient.scan_iter(match=keys.runs_pattern(jobname)))
    assert [k for k in left if not k.endswith(b":data")] == []  # dead at once; only its values stay, for a resume
    assert all(0 < rclient.pttl(k) <= 3_600_000 for k in left)  # with their TTL (resume_ttl)
    rclient.delete(*left, keys.runs(jobname))


MANAGER = """
import json, sys, time
from dask_redisparam import RedisParam
from tests import tasks
with RedisParam(jobname=sys.argv[1], is_worker=False) as p:
    start = time.monotonic()
    pids = p({("s", i): (tasks.sleep_then_pid, 0.5, i) for i in range(16)}, [("s", i) for i in range(16)])
    print(json.dumps({"pids": list(pids), "seconds": time.monotonic() - start}))
"""


def test_network_cut_to_a_worker_host(tmp_path: pathlib.Path) -> None:
    network = TestNetwork(["redis", "manager", "host1", "host2"])
    password = secrets.token_urlsafe(16)
    conf = tmp_path / "redis.conf"
    conf.write_text(f'requirepass "{password}"\n')
    redis_host = network.addresses["redis"]
    argv = [find_redis_server(), str(conf), "--port", "6379", "--bind", redis_host, "--save", "", "--appendonly", "no"]
    server = network.popen("redis", argv, env=os.environ, stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    env.update(REDISPARAM_HOST=redis_host, REDISPARAM_PORT="6379", REDISPARAM_PASSWORD=password)
    jobname = "cut-" + secrets.token_hex(4)
    lease = ["--heartbeat-interval", "0.3", "--heartbeat-ttl", "2"]
    workers = {
        host: network.popen(host, ["dask-redisparam-worker", "--jobname", jobname, "--id", host, *lease], env=env)
        for host in ("host1", "host2")
    }
    manager = network.popen(
        "manager", [sys.executable, "-c", MANAGER, jobname], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2.5)  # both hosts are working on tasks now
        network.set_link("host1", up=False)
        out, _ = manager.communicate(timeout=60)
        report = json.loads(out.strip().splitlines()[-1])
        hosts = [network.host_of(pid) for pid in report["pids"]]
        assert len(report["pids"]) == 16
        assert "host2" in hosts
        # host1's unfinished task was re-run on host2 after the lease (2 s) and a reap (1 s): the run did not wait
        # for the cut host (a hang would end in the 60 s timeout above)
        assert report["seconds"] < 20, report
    finally:
        network.set_link("host1", up=True)
        for w in workers.values():
            w.send_signal(signal.SIGTERM)
        for w in workers.values():
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        if manager.poll() is None:
            manager.kill()
        server.terminate()
        server.wait(10)
        network.close()

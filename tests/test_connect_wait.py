"""Worker daemons started before their Redis server wait for it (``--connect-timeout``: how long)."""

from __future__ import annotations

import os
import subprocess
import time

from dask_redisparam import RedisParam
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers


def test_a_daemon_started_before_its_server_waits_and_then_serves(jobname: str) -> None:
    server = EmbeddedRedis(tcp=True).start()  # started once for a free port, then stopped: nothing listens there
    address = server.address
    server.kill()
    workers = CliWorkers(address, jobname, 2)
    try:
        time.sleep(2.5)
        assert workers.process.poll() is None, "the daemon did not wait for its server"
        server.restart()
        wait_for_workers(address, jobname, 2)
        with RedisParam(jobname=jobname, is_worker=False, url=address.to_url(show_password=True)) as param:
            assert param({("t", i): (tasks.inc, i) for i in range(10)}, [("t", i) for i in range(10)]) == tuple(
                range(1, 11)
            )
        assert workers.stop() == 0
        log = workers.stderr()
    finally:
        workers.stop()
        workers.log.close()
        server.stop()
    assert f"waiting for Redis at 127.0.0.1:{address.port}" in log
    assert "starting a new one" not in log  # the daemon waited: no process died meanwhile


def test_connect_timeout_ends_the_wait_with_an_error_naming_host_and_port(jobname: str) -> None:
    server = EmbeddedRedis(tcp=True).start()
    port = server.port
    server.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    argv = ["dask-redisparam-worker", "--jobname", jobname, "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    done = subprocess.run([*argv, "--connect-timeout", "1"], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert 1.0 <= elapsed < 10, elapsed  # 1 s of waiting, plus starting Python on a loaded machine
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "gave up after waiting 1.0 s" in errors[0]
    assert "supervisor:" not in done.stderr  # no worker process was started

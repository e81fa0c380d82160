"""``dask-redisparam runs``: a job's unended runs, live and dead; ``clean`` drops the dead ones' resume values."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from tests import tasks_resume
from tests.conftest import CliWorkers, start_manager_process, wait_until
from tests.test_cli_pool import run_cli
from tests.test_resume import _Interrupt, _run_keys


def test_runs_lists_live_and_dead_runs_and_clean_drops_the_dead(
    redis_address: RedisAddress,
    jobname: str,
    cli_workers: Callable[..., CliWorkers],
    manager: RedisParam,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    url = redis_address.to_url(show_password=True)
    cli_workers(1)
    try:  # a dead run: its manager was interrupted after 10 tasks
        with _Interrupt(10):
            tasks_resume.workload("delayed", manager, str(tmp_path / "count"))
    except KeyboardInterrupt:
        pass
    (dead,) = manager.backend.registered_runs(jobname)
    live_manager = start_manager_process(redis_address, jobname, 200)  # 0.2 s tasks: alive for the whole test
    try:
        assert wait_until(lambda: len(manager.backend.registered_runs(jobname)) == 2, 10)
        (live,) = set(manager.backend.registered_runs(jobname)) - {dead}
        done = run_cli("dask-redisparam", "runs", "--jobname", jobname, url=url)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"job {jobname} on {redis_address.describe()}: 2 unended run(s)"
        assert lines[1].split() == ["RUN", "STATE", "AGE", "(s)", "MANAGER", "DONE/TOTAL", "BYTES", "RESUMABLE"]
        dead_row = next(line for line in lines if line.startswith(dead))
        live_row = next(line for line in lines if line.startswith(live))
        found = re.search(r" dead +\d+ +\S+:\d+ +(\d+)/63 +\d+(\.\d)? (B|kB) +yes \(died \d+ s ago\)$", dead_row)
        assert found and 10 <= int(found[1]) < 63, dead_row  # the 10 tasks done when it was interrupted, or more
        assert re.search(rf" alive +\d+ +\S+:{live_manager.pid} +\d+/200 +.* no \(live\)$", live_row), live_row
        cleaned = run_cli("dask-redisparam", "clean", "--jobname", jobname, url=url)
        assert cleaned.returncode == 0, cleaned.stderr
        assert "removed 0 dead worker(s), 1 dead run(s)" in cleaned.stdout
        assert list(manager.backend.registered_runs(jobname)) == [live]
        assert not rclient.exists(keys.data(jobname, dead))
    finally:
        live_manager.send_signal(signal.SIGINT)  # interrupted: its run keeps its values for a resume
        live_manager.wait(30)
        assert live_manager.stdout is not None
        live_manager.stdout.close()
    cleaned = run_cli("dask-redisparam", "clean", "--jobname", jobname, url=url)
    assert "1 dead run(s)" in cleaned.stdout, cleaned.stdout
    assert _run_keys(rclient, jobname) == []

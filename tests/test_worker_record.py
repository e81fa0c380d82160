"""A worker's record (its registration hash): ``prefix`` of the task running now, ``rss``, ``beat``, updated by
the heartbeats only (no write per message)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers, wait_until


def test_record_shows_prefix_rss_and_beat(
    redis_address: RedisAddress,
    jobname: str,
    manager: RedisParam,
    cli_workers: Callable[..., CliWorkers],
    tmp_path: Path,
) -> None:
    cli_workers(1, "--id", "rec", "--heartbeat-interval", "0.1")
    backend = Backend.connect(redis_address)
    try:

        def record() -> dict[str, str]:
            return backend.worker_records(jobname).get("rec", {})

        assert wait_until(lambda: "beat" in record(), 10)
        idle = record()
        assert idle["prefix"] == "" and idle["current"] == ""
        assert int(idle["rss"]) > 10 << 20  # a Python process with dask imported
        assert abs(float(idle["beat"]) - time.time()) < 5
        release = tmp_path / "release"
        graph = {("sleepy-thing-0f3c", 0): (tasks.wait_for_file, str(release))}
        runner = threading.Thread(target=manager, args=(graph, [("sleepy-thing-0f3c", 0)]))
        runner.start()
        try:
            assert wait_until(lambda: record().get("prefix") == "sleepy-thing", 10), record()
            busy = record()
            assert busy["current"].count("/") == 1  # run/message
        finally:
            release.touch()
            runner.join(30)
        assert wait_until(lambda: record().get("prefix") == "" and record().get("current") == "", 5), record()
        first = float(record()["beat"])
        assert wait_until(lambda: float(record()["beat"]) > first, 5)  # every heartbeat renews it
        assert record()["tasks"] == "1"
    finally:
        backend.close()

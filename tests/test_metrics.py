"""``/metrics``: the counters kept in Redis where the facts happen (completion script, reaper, manager) are exact,
parse with prometheus_client's parser and survive a restart of the dashboard."""

from __future__ import annotations

import os
import re
import signal
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.backend.monitor import JobLook
from dask_redisparam.backend.stats import parse_metrics
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.dashboard import Dashboard, metrics
from dask_redisparam.dashboard.metrics import exposition
from tests import tasks
from tests.conftest import CliWorkers, wait_until


def scrape(dashboard: Dashboard) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``/metrics``: name -> {sorted labels: value}."""
    text = urllib.request.urlopen(dashboard.link + "metrics", timeout=10).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


@pytest.mark.timeout(60)
def test_counters_equal_the_tasks_run_failed_and_retried_and_survive_a_restart(
    redis_address: RedisAddress, jobname: str, url_param: Callable[..., RedisParam], rclient: redis.Redis
) -> None:
    dsk: dict[object, object] = {("inc", i): (tasks.inc, i) for i in range(20)}
    dsk["total"] = (tasks.sum_all, *[("inc", i) for i in range(20)])
    with url_param(2) as p:
        assert p(dsk, "total") == sum(range(1, 21))
        failing = {"boom": (tasks.fail, "on purpose")}
        with pytest.raises(ValueError, match="on purpose"):
            p(failing, "boom", retries=1)
        with Dashboard(redis_address, jobname, "127.0.0.1:0") as dash:
            first = scrape(dash)
    job = {"job": jobname}
    assert value(first, "redisparam_tasks_finished_total", **job) == 21
    assert value(first, "redisparam_tasks_failed_total", **job) == 2  # the first run and its retry
    assert value(first, "redisparam_tasks_retried_total", **job) == 1
    assert value(first, "redisparam_messages_lost_total", **job) == 0
    inc = {"job": jobname, "prefix": "inc"}
    assert value(first, "redisparam_task_duration_seconds_count", **inc) == 20
    assert value(first, "redisparam_task_duration_seconds_bucket", le="+Inf", **inc) == 20
    assert value(first, "redisparam_task_duration_seconds_count", job=jobname, prefix="boom") == 2
    assert value(first, "redisparam_queue_length", **job) == 0
    assert value(first, "redisparam_dead_letters", **job) == 0
    # a new dashboard reads the same counters from Redis; only the workers left meanwhile
    with Dashboard(redis_address, None, "127.0.0.1:0") as dash:
        again = scrape(dash)
    for name in ("redisparam_tasks_finished_total", "redisparam_tasks_failed_total", "redisparam_tasks_retried_total"):
        assert value(again, name, **job) == value(first, name, **job)
    assert value(again, "redisparam_workers", **job) == 0
    assert rclient.pttl(keys.metrics(jobname)) > 86400_000  # kept, with a TTL
    rclient.delete(*keys.statistics(jobname))


@pytest.mark.timeout(60)
def test_a_worker_killed_holding_a_message_counts_one_lost_message(
    redis_address: RedisAddress,
    jobname: str,
    manager: RedisParam,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
) -> None:
    cli_workers(1)
    result: list[object] = []
    run = threading.Thread(target=lambda: result.append(manager({"s": (tasks.sleep_then_pid, 1.0)}, "s")))
    run.start()
    backend = manager.backend

    def busy_pid() -> int | None:  # the worker that holds the message (in its processing list)
        records = backend.worker_records(jobname)
        return next((int(f["pid"]) for w, f in records.items() if rclient.llen(keys.processing(jobname, w))), None)

    assert wait_until(lambda: busy_pid() is not None, 20)
    pid = busy_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the supervisor reaps it at once and starts another worker, which runs it again
    run.join(30)
    assert result and isinstance(result[0], int) and result[0] != pid
    with Dashboard(redis_address, jobname, "127.0.0.1:0") as dash:
        samples = scrape(dash)
    job = {"job": jobname}
    assert value(samples, "redisparam_messages_lost_total", **job) == 1
    assert value(samples, "redisparam_tasks_finished_total", **job) == 1
    assert value(samples, "redisparam_tasks_failed_total", **job) == 0
    assert value(samples, "redisparam_workers", **job) == 1
    rclient.delete(*keys.statistics(jobname))


def test_the_documented_metrics_are_the_served_ones() -> None:
    look = JobLook("demo", {}, 0, 0, 0, {}, parse_metrics({"finished|inc": "1", "b0|inc": "1"}), [], [], 0, 0.0)
    served = {family.name for family in text_string_to_metric_families(exposition(lambda: [look]).decode())}
    page = (Path(__file__).resolve().parents[1] / "docs" / "dashboard.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `(redisparam_\w+)` \| (\w+) \|", page, re.M))
    in_docstring = set(re.findall(r"``(redisparam_\w+)``", metrics.__doc__ or ""))
    # the parser names a counter's family without its _total suffix
    assert {name.removesuffix("_total") for name in documented} == served
    assert set(documented) == in_docstring
    assert all(documented[name] == "counter" for name in documented if name.endswith("_total"))

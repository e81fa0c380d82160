"""Worker resources: real ``dask-redisparam-worker`` daemons (one with ``--resources GPU=1``), a real redis-server.

Tasks annotated with ``dask.annotate(resources={"GPU": 1})`` (and ``map``/``iterate``/``submit`` with
``resources=``) run only on the daemon that has a GPU, never two at once although it has two processes; tasks
without resources run on both daemons; a task that asks for what no live worker has waits, warns, and runs once such
a worker joins. The timeline (the workers' clocks) says which worker ran each task and when.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import dask
import jsonschema
import pytest
import redis
from click.testing import CliRunner

from dask_redisparam import RedisParam
from dask_redisparam.cli import main
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.errors import ConfigurationError
from dask_redisparam.manager import resources as manager_resources
from tests.conftest import CliWorkers, left_keys, wait_for_workers, wait_until
from tests.test_cli_status import SCHEMA

pytestmark = pytest.mark.timeout(90)


def hold(x: int, seconds: float) -> int:
    """A task that takes ``seconds``."""
    time.sleep(seconds)
    return x


def overlaps(spans: list[tuple[float, float]]) -> int:
    """How many of the (start, end) spans overlap the one before them, in start order."""
    spans = sorted(spans)
    return sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False) if start < end - 1e-3)


def test_gpu_tasks_run_only_on_the_gpu_daemon_one_at_a_time(
    cli_workers: Callable[..., CliWorkers], manager: RedisParam, rclient: redis.Redis, jobname: str
) -> None:
    gpu = cli_workers(2, "--resources", "GPU=1", "--id", "gpu")
    cli_workers(2, "--id", "cpu")
    with dask.annotate(resources={"GPU": 1}):
        annotated = [dask.delayed(hold)(i, 0.25, dask_key_name=f"gpu-{i}") for i in range(6)]
    plain = [dask.delayed(hold)(i, 0.15, dask_key_name=f"cpu-{i}") for i in range(16)]
    assert dask.compute(annotated, plain, scheduler=manager) == (list(range(6)), list(range(16)))
    timeline = {r.key: r for r in manager.timeline()}
    gpu_runs = [timeline[f"gpu-{i}"] for i in range(6)]
    assert {r.worker.split("-")[0] for r in gpu_runs} == {"gpu"}
    assert overlaps([(r.start, r.end) for r in gpu_runs]) == 0
    assert {timeline[f"cpu-{i}"].worker.split("-")[0] for i in range(16)} == {"gpu", "cpu"}

    # map, iterate and the executor's submit take resources= too
    before = len(manager.timeline())
    assert manager.map(hold, range(4), [0.1] * 4, resources={"GPU": 1}) == [0, 1, 2, 3]
    mapped = manager.timeline()
    assert len(mapped) == 4 and before > 0
    assert {r.worker.split("-")[0] for r in mapped} == {"gpu"}
    assert overlaps([(r.start, r.end) for r in mapped]) == 0
    assert manager.iterate(iter(range(3)), hold, seconds=0.05, resources="GPU=1") == [0, 1, 2]
    assert {r.worker.split("-")[0] for r in manager.timeline()} == {"gpu"}
    with manager.executor() as executor:
        futures = [executor.submit(hold, i, 0.1, resources={"GPU": 1}) for i in range(3)]
        assert [f.result() for f in futures] == [0, 1, 2]
    # the daemon's resources are booked in Redis and freed: nothing of the runs or of the claims is left
    assert wait_until(lambda: not left_keys_but_workers(rclient, jobname), 5), left_keys_but_workers(rclient, jobname)
    gpu.stop()


def left_keys_but_workers(client: redis.Redis, jobname: str) -> list[bytes]:
    """The job's keys except its live workers' registrations (their hashes and the set of their ids): claims,
    daemons' bookings, class queues and lists are all gone."""
    return [k for k in left_keys(client, jobname) if not re.search(rb":worker:[^:]+$|:workers$", k)]


def test_a_task_waits_with_a_warning_until_a_worker_with_its_resources_joins(
    cli_workers: Callable[..., CliWorkers],
    manager: RedisParam,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rclient: redis.Redis,
    jobname: str,
) -> None:
    monkeypatch.setattr(manager_resources, "RESOURCE_WARNING", 1.0)
    cli_workers(1, "--id", "cpu")
    cli_workers(1, "--resources", "FPGA=1", "--id", "small")  # covers FPGA=1, never FPGA=2
    with dask.annotate(resources={"FPGA": 2}):
        big = dask.delayed(hold)(7, 0.0, dask_key_name="needs-two-fpgas")
    small = dask.delayed(hold)(1, 0.0, dask_key_name="anywhere")
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(value=dask.compute(big, small, scheduler=manager)))
    with caplog.at_level(logging.WARNING, logger="dask_redisparam.manager.loop"):
        started = time.monotonic()
        thread.start()
        assert wait_until(lambda: any("needs-two-fpgas" in r.getMessage() for r in caplog.records), 8)
        waited = time.monotonic() - started
        (text,) = {r.getMessage() for r in caplog.records if "needs-two-fpgas" in r.getMessage()}
        assert "FPGA=2" in text and jobname in text
        assert 0.9 <= waited < 8 and thread.is_alive()
        url = manager.backend.address.to_url(show_password=True)
        document = json.loads(CliRunner().invoke(main, ["status", "--url", url, "--jobname", jobname, "--json"]).output)
        jsonschema.Draft202012Validator(SCHEMA).validate(document)
        assert document["queued_resources"] == {"FPGA=2": 0}  # nothing is queued that no live worker can run
        cli_workers(1, "--resources", "FPGA=2", "--id", "big", wait=False)
        thread.join(30)
    assert not thread.is_alive() and out["value"] == (7, 1)
    timeline = {r.key: r.worker for r in manager.timeline()}
    assert timeline["needs-two-fpgas"].startswith("big")
    assert wait_until(lambda: not left_keys_but_workers(rclient, jobname), 5)


def test_bad_resources_name_the_task(manager: RedisParam, rclient: redis.Redis, jobname: str) -> None:
    with dask.annotate(resources={"GPU": "lots"}):
        bad = dask.delayed(hold)(1, 0.0, dask_key_name="odd-task")
    with pytest.raises(ConfigurationError, match="odd-task.*GPU"):
        dask.compute(bad, scheduler=manager)
    with pytest.raises(ConfigurationError, match="resources"):
        manager.map(hold, [1], [0.0], resources={"GPU": -1})
    with manager.executor() as executor, pytest.raises(ConfigurationError, match="GPU"):
        executor.submit(hold, 1, 0.0, resources="GPU")
    assert left_keys(rclient, jobname) == []


def test_local_workers_of_a_param_share_its_resources_and_status_shows_them(
    url_param: Callable[..., RedisParam], redis_address: RedisAddress, jobname: str
) -> None:
    with url_param(2, resources="GPU=1", dashboard=True) as p:
        wait_for_workers(p.backend.address, p.settings.jobname, 2)
        with dask.annotate(resources={"GPU": 1}):
            tasks = [dask.delayed(hold)(i, 0.2, dask_key_name=f"g-{i}") for i in range(4)]
        assert dask.compute(tasks, scheduler=p) == ([0, 1, 2, 3],)
        assert overlaps([(r.start, r.end) for r in p.timeline()]) == 0
        done = CliRunner().invoke(
            main, ["status", "--url", redis_address.to_url(show_password=True), "--jobname", jobname]
        )
        assert done.exit_code == 0 and "RESOURCES" in done.output and "GPU=1" in done.output, done.output
        done = CliRunner().invoke(
            main, ["status", "--url", redis_address.to_url(show_password=True), "--jobname", jobname, "--json"]
        )
        document = json.loads(done.output)
        jsonschema.Draft202012Validator(SCHEMA).validate(document)
        assert [w["resources"] for w in document["workers"]] == [{"GPU": 1.0}, {"GPU": 1.0}]
        assert p.dashboard_link is not None
        state = json.loads(urllib.request.urlopen(p.dashboard_link + "api/jobs", timeout=10).read())
        (job,) = [j for j in state["jobs"] if j["job"] == jobname]
        assert [w["resources"] for w in job["workers"]] == ["GPU=1", "GPU=1"]


def die_once(marker: str) -> str:
    """Kill the worker process the first time (no clean-up: a crash), return the worker's pid the second."""
    import os
    import pathlib

    path = pathlib.Path(marker)
    if not path.exists():
        path.write_text("died")
        os._exit(9)
    return str(os.getpid())


def test_a_resource_message_of_a_dead_worker_goes_back_to_its_class(
    cli_workers: Callable[..., CliWorkers], manager: RedisParam, rclient: redis.Redis, jobname: str, tmp_path: Any
) -> None:
    cli_workers(1, "--resources", "GPU=1", "--id", "gpu")
    cli_workers(1, "--id", "cpu")
    with dask.annotate(resources={"GPU": 1}):
        crashing = dask.delayed(die_once)(str(tmp_path / "marker"), dask_key_name="crashing")
    (pid,) = dask.compute(crashing, scheduler=manager)
    assert (tmp_path / "marker").exists() and pid.isdigit()
    (record,) = manager.timeline()
    assert record.worker.startswith("gpu")  # the restarted GPU process, not the CPU daemon
    assert wait_until(lambda: not left_keys_but_workers(rclient, jobname), 5), left_keys_but_workers(rclient, jobname)


def test_the_gpu_deployment_of_the_kubernetes_guide_is_valid_and_gives_resources() -> None:
    import kubernetes_validate  # type: ignore[import-untyped]
    import yaml  # type: ignore[import-untyped]

    from dask_redisparam.config.checks import resources as check_resources
    from tests.test_deploy import DEPLOY, K8S_VERSIONS

    (deployment,) = [d for d in yaml.safe_load_all((DEPLOY / "worker-gpu-deployment.yaml").read_text()) if d]
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["args"][0].split()
    given = check_resources("resources", command[command.index("--resources") + 1], {})
    assert dict(given)["GPU"] == container["resources"]["limits"]["nvidia.com/gpu"]


def test_which_collections_carry_their_annotations_to_the_scheduler() -> None:
    """delayed always, dask.array with optimize_graph=False; dask.dataframe never (query planning drops them)."""
    import dask.array as da
    from dask.base import collections_to_expr

    from dask_redisparam.manager.graph import prepare_graph
    from dask_redisparam.manager.resources import task_classes

    def classes(collection: Any, optimize: bool) -> set[str]:
        expr = collections_to_expr([collection], optimize_graph=optimize)
        graph = prepare_graph(expr, list(expr.__dask_keys__()))
        return set(task_classes(graph.annotations, graph.nodes).values())

    with dask.annotate(resources={"GPU": 1}):
        x = da.ones(8, chunks=4) + 1
        d = dask.delayed(hold)(1, 0.0)
    assert classes(d, True) == {"GPU=1.0"}
    assert classes(x, False) == {"GPU=1.0"} and classes(x, True) == set()


def fail_on(x: int, bad: int) -> int:
    """Raise for ``bad``, after a short while for the others."""
    if x == bad:
        raise ValueError(f"bad {x}")
    time.sleep(0.3)
    return x


def test_a_failure_withdraws_the_queued_messages_of_a_class(
    cli_workers: Callable[..., CliWorkers], manager: RedisParam, rclient: redis.Redis, jobname: str
) -> None:
    cli_workers(1, "--resources", "GPU=1", "--id", "gpu")
    with dask.annotate(resources={"GPU": 1}):
        parts = [dask.delayed(fail_on)(i, 0, dask_key_name=f"part-{i}") for i in range(8)]
    with pytest.raises(ValueError, match="bad 0"):
        dask.compute(parts, scheduler=manager)
    assert len(manager.timeline()) < 8  # the queued ones were taken back from the class's queue

    def left() -> list[bytes]:  # the failed run's values are kept for redo= (redo_ttl), on purpose
        return [k for k in left_keys_but_workers(rclient, jobname) if b":redo:" not in k]

    assert wait_until(lambda: not left(), 5), left()

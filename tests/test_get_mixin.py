"""dask's own ``get`` conformance suite (``dask.utils_test.GetFunctionTestMixin``), run twice.

* :class:`TestRedisGet`: :func:`dask_redisparam.redis_get`, the process-wide default param (embedded server and
  local worker processes).
* :class:`TestManagerWithCliWorkers`: a manager-only ``RedisParam(is_worker=False)`` on the session's
  redis-server, served by ``dask-redisparam-worker --nworkers 2`` subprocesses.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psutil
import pytest
from dask.utils_test import GetFunctionTestMixin

import dask_redisparam
from dask_redisparam import RedisParam, redis_get
from dask_redisparam.worker.server import EmbeddedRedis

from .conftest import CliWorkers, wait_for_workers
from .tasks import sleep_then_pid

NWORKERS = 2


@pytest.fixture(scope="module", autouse=True)
def _shutdown_default_param() -> Iterator[None]:
    """Stop the default param of ``redis_get`` (its workers and embedded server) when the module is done."""
    yield
    dask_redisparam.shutdown()


class TestRedisGet(GetFunctionTestMixin):
    get = staticmethod(redis_get)


@pytest.fixture(scope="class")
def cli_manager(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> Iterator[RedisParam]:
    """CLI workers (2 processes) on a fresh job plus a started manager-only param, installed as the class's ``get``."""
    address = redis_server.address
    jobname = "t-mixin-" + uuid.uuid4().hex[:12]
    workers = CliWorkers(address, jobname, NWORKERS)
    try:
        wait_for_workers(address, jobname, NWORKERS)
        with RedisParam(jobname=jobname, is_worker=False, url=address.to_url(show_password=True)) as param:
            request.cls.get = staticmethod(param)
            request.cls.cli_workers = workers
            try:
                yield param
            finally:
                del request.cls.get, request.cls.cli_workers
    finally:
        returncode = workers.stop()
        log = workers.stderr()
        workers.log.close()  # CliWorkers never closes its log file (an unclosed file is a ResourceWarning)
        assert returncode == 0, f"dask-redisparam-worker exited with {returncode}:\n{log}"


@pytest.mark.usefixtures("cli_manager")
class TestManagerWithCliWorkers(GetFunctionTestMixin):
    cli_workers: CliWorkers

    def test_served_by_the_cli_workers(self, cli_manager: RedisParam) -> None:
        """The class's ``get`` really is the manager-only param, and both CLI worker processes serve it."""
        assert self.get is cli_manager
        assert cli_manager.is_up and cli_manager.is_worker is False
        assert len(cli_manager.worker_ids()) == NWORKERS
        dsk = {f"pid-{i}": (sleep_then_pid, 0.2) for i in range(4)}
        pids = set(self.get(dsk, list(dsk)))
        children = {child.pid for child in psutil.Process(self.cli_workers.process.pid).children(recursive=True)}
        assert pids and pids <= children, (pids, children)

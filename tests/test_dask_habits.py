"""The dask side of a param: the named scheduler ``"redisparam"``, a warning per compute for the annotations and
keywords that have no effect, ``compute(timeout=)``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import dask
import dask.array as da
import pytest

import dask_redisparam
from dask_redisparam import ConfigurationError, IgnoredOptionWarning, RedisParam, TaskTimeout
from dask_redisparam.param import SCHEDULER_NAME, redis_get
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks


@pytest.fixture(scope="module")
def param(redis_server: EmbeddedRedis) -> Iterator[RedisParam]:
    """One param with one local worker for the module (on its own job): starting workers is what takes time."""
    with RedisParam(
        1, jobname="habits-" + uuid.uuid4().hex[:8], url=redis_server.address.to_url(show_password=True)
    ) as p:
        yield p


@pytest.fixture
def default_on_test_server(param: RedisParam) -> Iterator[None]:
    """The process-wide default param of ``redis_get`` starts on the test's server, as a manager served by the
    module's worker."""
    dask_redisparam.shutdown()
    url = param.backend.address.to_url(show_password=True)
    with dask.config.set({"redisparam.url": url, "redisparam.jobname": param.jobname, "redisparam.is_worker": False}):
        try:
            yield
        finally:
            dask_redisparam.shutdown()


def test_scheduler_redisparam_is_the_default_param(default_on_test_server: None, param: RedisParam) -> None:
    assert dask.base.named_schedulers[SCHEDULER_NAME] is redis_get
    x = da.arange(12, chunks=4).sum()
    with dask.config.set(scheduler="redisparam"):
        assert int(x.compute()) == 66
    default = dask_redisparam.param._default
    assert default is not None and default.is_up and default.jobname == param.jobname  # started on first use, kept
    assert default is not param and len(default.timeline()) > 0  # the compute ran on it
    assert dask.compute(dask.delayed(tasks.inc)(1), scheduler="redisparam") == (2,)
    assert dask_redisparam.param._default is default  # the same param again
    assert len(default.timeline()) == 1  # the delayed's one task


def test_each_ignored_annotation_and_keyword_is_named_once_per_compute(param: RedisParam) -> None:
    with dask.annotate(allow_other_workers=False, workers=["w1"]):  # (resources= is honoured: test_resources.py)
        pinned = dask.delayed(tasks.inc)(1)
    for _ in range(2):  # once per compute, every time
        with pytest.warns(IgnoredOptionWarning) as caught:
            assert dask.compute(pinned, scheduler=param, num_workers=4, bogus="x") == (2,)
        assert len(caught) == 1
        message = str(caught[0].message)
        for named in ("annotation allow_other_workers= (on 1 task)", "annotation workers=", "keyword num_workers=4"):
            assert named in message, message
        assert "keyword bogus='x': not a keyword that dask-redisparam knows" in message
        assert caught[0].filename == __file__  # it points at the compute
    with pytest.warns(IgnoredOptionWarning, match=r"keyword num_workers=2") as caught:
        assert param({"x": (tasks.inc, 1)}, "x", num_workers=2) == 2  # the get itself, too
    assert len(caught) == 1 and "annotation" not in str(caught[0].message)
    # our own keywords, and dask's own (which never reach the get), warn about nothing (warnings are errors here)
    kept = dict(retries=1, timeout=30, return_exceptions=False, fuse_chains=True, callbacks=None)
    assert dask.compute(dask.delayed(tasks.inc)(2), scheduler=param, **kept) == (3,)
    assert dask.compute(dask.delayed(tasks.inc)(2), scheduler=param, optimize_graph=False, traverse=False) == (3,)


def test_compute_timeout_overrides_the_setting(param: RedisParam) -> None:
    assert param.timeout is None
    started = time.monotonic()
    with pytest.raises(TaskTimeout):
        dask.compute(dask.delayed(tasks.sleep_leaf)(9, 30), scheduler=param, timeout=0.2)
    assert time.monotonic() - started < 10
    assert dask.compute(dask.delayed(tasks.sleep_leaf)(7, 0.3), scheduler=param) == (7,)  # the setting again
    with pytest.raises(ConfigurationError, match=r"timeout=-1 must be a number > 0"):
        dask.compute(dask.delayed(tasks.inc)(1), scheduler=param, timeout=-1)

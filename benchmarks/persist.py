"""Persist that keeps values in Redis: the manager's memory and bytes received, and the time, against ``threads``.

``python -m benchmarks.persist`` (1 GB) or ``--quick`` (128 MB, the issue's 4000x4000 array in 16 chunks).

In one process: a ``RedisParam(workers=2)`` (embedded server) persists a random float64 array of that size made by
the workers (``dask.persist(x, scheduler=p)``: the values stay in Redis), then sums the persisted array
(``.sum().compute(scheduler=p)``: read by the workers); meanwhile a thread samples this process's resident memory
every 2 ms and ``Backend.bytes_downloaded`` counts the value bytes the manager received. Then the same with dask's
``threads`` scheduler (``x.persist()``: the chunks in this process's memory, then the sum), for the time ratio. The
sums must be equal (same chunks, same order). It prints one line per scheduler and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from typing import Any

import dask
import dask.array as da

from dask_redisparam import RedisParam

__all__ = ["main", "measure"]

MB = 2**20


class PeakRss:
    """This process's highest resident memory while the block runs (sampled every 2 ms), and the growth."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def rss() -> int:
    """This process's resident memory in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(nbytes: int, workers: int = 2) -> dict[str, Any]:
    """Persist and sum an array of about ``nbytes`` with a RedisParam, then with ``threads``; the figures."""
    side = int((nbytes / 8) ** 0.5) // 4 * 4
    x = da.random.RandomState(0).random((side, side), chunks=(side // 4, side // 4))  # 16 chunks
    out: dict[str, Any] = {"array_bytes": x.nbytes, "chunks": x.npartitions}
    with RedisParam(workers=workers) as p:
        dask.persist(da.ones(10, chunks=5), scheduler=p)  # warm-up: imports, connections, the keeper's thread
        gc.collect()
        downloaded = p.backend.bytes_downloaded
        with PeakRss() as memory:
            t0 = time.perf_counter()
            (y,) = dask.persist(x, scheduler=p)
            t1 = time.perf_counter()
            ours = y.sum().compute(scheduler=p)
            t2 = time.perf_counter()
        out.update(
            persist_s=t1 - t0,
            sum_s=t2 - t1,
            rss_growth=memory.growth,
            received=p.backend.bytes_downloaded - downloaded,
        )
        del y
    gc.collect()
    with PeakRss() as memory:
        t0 = time.perf_counter()
        (z,) = dask.persist(x, scheduler="threads")
        t1 = time.perf_counter()
        theirs = z.sum().compute(scheduler="threads")
        t2 = time.perf_counter()
    out.update(threads_persist_s=t1 - t0, threads_sum_s=t2 - t1, threads_rss_growth=memory.growth)
    if ours != theirs:
        raise AssertionError(f"the sums differ: {ours!r} with RedisParam, {theirs!r} with threads")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.persist", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="128 MB instead of 1 GB")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    nbytes = 128 * 10**6 if args.quick else 2**30
    r = measure(nbytes, args.workers)
    size = r["array_bytes"]
    print(f"array: {size / MB:.0f} MiB in {r['chunks']} chunks")
    print(
        f"redisparam: persist {r['persist_s']:.2f} s + sum {r['sum_s']:.2f} s; manager RSS +{r['rss_growth'] / MB:.1f}"
        f" MiB ({100 * r['rss_growth'] / size:.1f} % of the array), received {r['received'] / 1024:.1f} KiB"
    )
    print(
        f"threads:    persist {r['threads_persist_s']:.2f} s + sum {r['threads_sum_s']:.2f} s; RSS "
        f"+{r['threads_rss_growth'] / MB:.1f} MiB"
    )
    ours = r["persist_s"] + r["sum_s"]
    theirs = r["threads_persist_s"] + r["threads_sum_s"]
    alone = r["sum_s"] / r["threads_sum_s"]
    print(f"ratio redisparam / threads: persist+sum {ours / theirs:.1f}x, sum alone {alone:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cost of a Redis Cluster to the backend: CPU time per operation against one server and against a 3-primary
cluster on loopback, interleaved.

``python -m benchmarks.cluster_cost [--calls 4000] [--repeat 3]``

Each round times ``--calls`` calls of three operations (``queue_length``: one command; ``heartbeat``: one script;
``exchange``: the manager's pipeline) on a plain TCP server and on the cluster (the job's primary, routed per slot),
in the same process, alternately; it prints the median CPU microseconds per call (``time.process_time``: the
client's own cost, what routing adds) and the cluster/plain ratio. It needs Debian's redis-server and redis-cli (the
cluster is made as ``tests/test_cluster.py`` makes it).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable

from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker.server import EmbeddedRedis

__all__ = ["main"]


def _operations(backend: Backend) -> dict[str, Callable[[], object]]:
    backend.register_worker("bench", "w", {"host": "h"}, 60)
    return {
        "queue_length": lambda: backend.queue_length("bench"),
        "heartbeat": lambda: backend.heartbeat("bench", "w", 60, {"host": "h"}),
        "exchange": lambda: backend.exchange("bench", "r1", [], [], 5.0, max_records=10),
    }


def _time(call: Callable[[], object], calls: int) -> float:
    for _ in range(min(300, calls)):
        call()
    start = time.process_time()
    for _ in range(calls):
        call()
    return 1e6 * (time.process_time() - start) / calls


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print one line per operation."""
    from tests.rcluster import TestCluster  # the test suite's cluster maker (redis-cli --cluster create)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    cluster = TestCluster(pathlib.Path(tempfile.mkdtemp(prefix="drp-cluster-bench-")))
    try:
        with EmbeddedRedis(tcp=True) as server:
            plain = Backend.connect(
                RedisAddress(host="127.0.0.1", port=server.port or 0, password=server.address.password)
            )
            routed = Backend.connect(RedisAddress.from_url(cluster.url))
            ops = {"plain": _operations(plain), "cluster": _operations(routed)}
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeat):
                for kind in ("plain", "cluster"):
                    for name, call in ops[kind].items():
                        times.setdefault((kind, name), []).append(_time(call, args.calls))
            for name in ops["plain"]:
                a, b = (statistics.median(times[(kind, name)]) for kind in ("plain", "cluster"))
                print(f"{name:13s} plain {a:7.1f} us CPU/call   cluster {b:7.1f} us CPU/call   ratio {b / a:.2f}")
            plain.close()
            routed.close()
    finally:
        cluster.close()


if __name__ == "__main__":
    main()

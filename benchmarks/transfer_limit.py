"""Child process of the transfer study: what moving the chain's bytes costs on this machine with nothing of ours.

``python -m benchmarks.transfer_limit --bytes 256000000 --repeat 3``

The transfer study's per-hop time (:mod:`.studies`) is set against these, measured in the same run:

- **raw hop**: a plain Unix socket to a fresh ``redis-server`` started as the embedded one is (same binary and
  arguments), no redis-py, no pickling, no signing: the array's bytes written with ``HSET`` in parts of
  :data:`~dask_redisparam.wire.bulk.PART_BYTES` (pipelined), then read back with ``HGET`` into a buffer the process
  has used before (``recv_into``, :data:`~dask_redisparam.backend.large.READ_WINDOW` parts asked for at a time),
  then deleted; the first ``--cold`` rounds untimed, as for the schedulers;
- **tag passes**: Poly1305 over the array (the default signs large values: the writer makes the tag, the reader
  checks it), one pass;
- **fresh memory**: filling ``nbytes`` of memory the process never touched (``numpy.empty`` + ``fill``), when the
  pages were freed just before (the kernel only zeroes them: *recycled*) and when they were freed more than the free
  page reporting delay before (on a virtual machine that reports freed memory, the host must back them again:
  *reported*), against filling memory already in use (*warm*).

Reports one ``limit`` event with every time, then ``done``.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

from .subproc import child_main, emit

__all__ = ["main"]

REPORTING_DELAY = 3.0
"""Seconds to wait for freed memory to be reported to the host (Linux reports after 2 s)."""


def _command(*args: bytes | memoryview) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = [b"*%d\r\n" % len(args)]
    for arg in args:
        out += [b"$%d\r\n" % len(arg), arg, b"\r\n"]
    return out


class RawClient:
    """Just enough RESP over one socket to move parts of a buffer in and out of a hash."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def send(self, pieces: list[bytes | memoryview]) -> None:
        for piece in pieces:
            self.sock.sendall(piece)

    def line(self) -> bytes:
        got = bytearray()
        while not got.endswith(b"\r\n"):
            byte = self.sock.recv(1)
            if not byte:
                raise ConnectionError("redis-server closed the connection")
            got += byte
        if got.startswith(b"-"):
            raise RuntimeError(got.decode(errors="replace").strip())
        return bytes(got[:-2])

    def bulk_into(self, view: memoryview) -> None:
        size = int(self.line()[1:])
        if size != len(view):
            raise RuntimeError(f"a part has {size} bytes, expected {len(view)}")
        got = 0
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if not n:
                raise ConnectionError("redis-server closed the connection")
            got += n
        tail = b""
        while len(tail) < 2:
            tail += self.sock.recv(2 - len(tail))

    def write(self, key: bytes, parts: list[memoryview]) -> None:
        self.send([p for i, part in enumerate(parts) for p in _command(b"HSET", key, b"%d" % i, part)])
        for _ in parts:
            self.line()

    def read(self, key: bytes, parts: list[memoryview], window: int) -> None:
        ask = [b"".join(_command(b"HGET", key, b"%d" % i)) for i in range(len(parts))]
        self.send(list(ask[:window]))
        for i, part in enumerate(parts):
            if i + window < len(ask):
                self.send([ask[i + window]])
            self.bulk_into(part)

    def delete(self, key: bytes) -> None:
        self.send(_command(b"DEL", key))
        self.line()


def _cut(buffer: memoryview, size: int) -> list[memoryview]:
    return [buffer[start : start + size] for start in range(0, len(buffer), size)]


def _raw_hops(nbytes: int, cold: int, repeat: int) -> dict[str, list[float]]:
    import numpy as np

    from dask_redisparam.backend.large import READ_WINDOW
    from dask_redisparam.wire.bulk import PART_BYTES
    from dask_redisparam.worker.server import EmbeddedRedis

    source: Any = np.ones(nbytes, dtype=np.uint8)  # both touched: warm
    target: Any = np.zeros(nbytes, dtype=np.uint8)
    out: dict[str, list[float]] = {"write_s": [], "read_s": []}
    with EmbeddedRedis() as server:
        assert server.socket_path is not None
        client = RawClient(server.socket_path)
        parts_in, parts_out = _cut(memoryview(source), PART_BYTES), _cut(memoryview(target), PART_BYTES)
        for r in range(cold + repeat):
            t0 = time.perf_counter()
            client.write(b"value", parts_in)
            t1 = time.perf_counter()
            client.read(b"value", parts_out, READ_WINDOW)
            t2 = time.perf_counter()
            client.delete(b"value")
            if not np.array_equal(source[-8:], target[-8:]):
                raise RuntimeError("the raw hop read back other bytes")
            target[-8:] = 0
            if r >= cold:
                out["write_s"].append(t1 - t0)
                out["read_s"].append(t2 - t1)
        client.sock.close()
    return out


def _tag_passes(nbytes: int, repeat: int) -> list[float]:
    import numpy as np

    from dask_redisparam.wire.bulk import PART_BYTES
    from dask_redisparam.wire.signing import Signer

    block: Any = np.ones(nbytes, dtype=np.uint8)
    data = memoryview(block)
    signer = Signer.from_secret("a-benchmark-secret-of-some-length")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        mac = signer.bulk_authenticator(b"job", b"n" * 16)
        for part in _cut(data, PART_BYTES):
            mac.update(part)
        mac.finalize()
        times.append(time.perf_counter() - t0)
    return times


def _fresh_memory(nbytes: int, repeat: int) -> dict[str, list[float]]:
    import numpy as np

    out: dict[str, list[float]] = {"recycled_s": [], "reported_s": [], "warm_s": []}
    for _ in range(repeat):
        block: Any = np.empty(nbytes, dtype=np.uint8)
        block.fill(1)
        del block  # freed: its pages are free again in this machine
        t0 = time.perf_counter()
        block = np.empty(nbytes, dtype=np.uint8)
        block.fill(2)
        t1 = time.perf_counter()
        block.fill(3)
        t2 = time.perf_counter()
        del block
        time.sleep(REPORTING_DELAY)  # long enough for them to be reported to the host, if this machine does that
        t3 = time.perf_counter()
        block = np.empty(nbytes, dtype=np.uint8)
        block.fill(4)
        t4 = time.perf_counter()
        del block
        out["recycled_s"].append(t1 - t0)
        out["warm_s"].append(t2 - t1)
        out["reported_s"].append(t4 - t3)
    return out


def _run(args: argparse.Namespace) -> None:
    found: dict[str, Any] = {"nbytes": args.bytes}
    found |= _raw_hops(args.bytes, args.cold, args.repeat)
    found["tag_s"] = _tag_passes(args.bytes, args.repeat)
    found |= _fresh_memory(args.bytes, args.repeat)
    emit("limit", **found)
    emit("done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer_limit", description=__doc__)
    parser.add_argument("--bytes", type=int, default=256_000_000, help="array size (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", type=int, default=2, help="untimed raw hops first (default %(default)s)")
    return child_main(_run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""A TCP proxy that delays each direction by a fixed time: Redis "across a network" on one machine.

``python -m benchmarks.delay_proxy --target 127.0.0.1:6379 --delay-ms 2`` listens on a free loopback port, prints
``port <n>`` on its first line, and forwards every connection to the target, holding each chunk of bytes
``--delay-ms`` milliseconds in each direction (so a round trip costs twice that more), in order, without limiting
the bandwidth: a chunk read at time t is written at t + delay, whatever else is in flight. It runs until killed
(SIGTERM / SIGINT) or until its standard input closes (``--stdin-closes``: the parent died).

It is an asyncio loop in a process of its own (so it competes with nothing in the manager's process). The delay is
a floor: asyncio's selector waits in whole milliseconds (a 0.5 ms delay comes out near 1 ms on an idle machine), and
a loaded machine adds its own scheduling delay; :func:`measure_rtt` measures what a client sees.

Examples
--------
>>> import socket
>>> echo = socket.create_server(("127.0.0.1", 0))
>>> proxy = DelayProxy(("127.0.0.1", echo.getsockname()[1]), delay=0.002)
>>> proxy.start_background()
>>> c = socket.create_connection(("127.0.0.1", proxy.port)); s, _ = echo.accept()
>>> c.sendall(b"ping"); s.recv(4)
b'ping'
>>> c.close(); s.close(); echo.close(); proxy.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["DelayProxy", "measure_rtt", "start_proxy_process"]

CHUNK = 1 << 20


class DelayProxy:
    """Forward loopback connections to ``target``, each direction delayed by ``delay`` seconds."""

    def __init__(self, target: tuple[str, int], delay: float, host: str = "127.0.0.1") -> None:
        self.target, self.delay, self.host = target, delay, host
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks as they come; a second task writes each one ``delay`` after it was read, in order."""
        loop = asyncio.get_running_loop()
        held: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = asyncio.Event()
        done = False

        async def deliver() -> None:
            while True:
                while not held:
                    if done:
                        return
                    ready.clear()
                    await ready.wait()
                when, data = held.popleft()
                wait = when - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                held.append((loop.time() + self.delay, data))
                ready.set()
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            ready.set()
            with contextlib.suppress(ConnectionError, OSError):
                await sender
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        for w in (client_w, server_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def serve(self) -> None:
        """Serve until :meth:`stop` (or the task is cancelled)."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._listener)
        async with server:
            await self._stopped.wait()

    def start_background(self) -> None:
        """Serve from a daemon thread of this process (tests, doctests); :meth:`stop` ends it."""
        started = threading.Event()

        def main() -> None:
            async def run() -> None:
                task = asyncio.ensure_future(self.serve())
                await asyncio.sleep(0)
                started.set()
                await task

            asyncio.run(run())

        self._thread = threading.Thread(target=main, name="delay-proxy", daemon=True)
        self._thread.start()
        started.wait(5)
        while self._stopped is None:
            time.sleep(0.001)

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(5)


def measure_rtt(ping: Callable[[], object], n: int = 50) -> float:
    """The median seconds of ``n`` calls of ``ping`` (e.g. a Redis ``PING`` through the proxy)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ping()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def start_proxy_process(target: tuple[str, int], delay: float) -> tuple[object, int]:
    """Start ``python -m benchmarks.delay_proxy`` for ``target``; return the process and the port it listens on."""
    import subprocess

    argv = [sys.executable, "-m", "benchmarks.delay_proxy", "--target", f"{target[0]}:{target[1]}"]
    argv += ["--delay-ms", f"{delay * 1000:g}", "--stdin-closes"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "port":
        proc.kill()
        raise RuntimeError(f"the delay proxy did not start: {line!r}")
    return proc, int(line[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delay_proxy", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="milliseconds added in each direction")
    parser.add_argument("--stdin-closes", action="store_true", help="stop when standard input closes")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = DelayProxy((host, int(port)), args.delay_ms / 1000)
    print(f"port {proxy.port}", flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(proxy.serve())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        if args.stdin_closes:
            loop.add_reader(sys.stdin.fileno(), lambda: task.cancel() if not sys.stdin.readline() else None)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A primary, its replicas and Sentinels for tests: real ``redis-server`` processes on loopback, in a temp directory.

The replicas may replicate through a :class:`FreezableProxy`: frozen, it drops the replication stream, so the
primary acknowledges writes that no replica gets (what a failover then loses).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import redis

REDIS_SERVER = "/usr/bin/redis-server"  # Debian's 7.0.15 (with TLS; runs Sentinels with --sentinel)
SERVICE = "svc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FreezableProxy:
    """Forward connections on 127.0.0.1 to ``(host, port)``; :meth:`freeze` drops everything from then on (the
    connections stay open: the replicas do not notice)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.frozen = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self.frozen = True

    def _serve(self) -> None:
        while not self._stop.is_set():
            for event, _ in self._selector.select(timeout=0.05):
                sock = event.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    client, _ = self._listener.accept()
                    try:
                        upstream = socket.create_connection(self.target)
                    except OSError:
                        client.close()
                        continue
                    self._peers[client], self._peers[upstream] = upstream, client
                    self._selector.register(client, selectors.EVENT_READ)
                    self._selector.register(upstream, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)
                    continue
                if not self.frozen:
                    try:
                        self._peers[sock].sendall(data)
                    except OSError:
                        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        if other is not None:
            self._peers.pop(other, None)
        for s in (sock, other):
            if s is None:
                continue
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in list(self._peers):
            self._drop(sock)
        self._selector.close()
        self._listener.close()


class SentinelGroup:
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum 1 with one, 2 with three)."""

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 1,
        *,
        proxy: bool = False,
        down_after_ms: int = 700,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="drp-sentinel-")
        self.tls = tls  # (CA, certificate, key) PEM files: every server and Sentinel speaks TLS only
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.primary = free_port()
        self._server(self.primary)
        self.proxy = FreezableProxy(self.primary) if proxy else None
        upstream = self.proxy.port if self.proxy else self.primary
        self.replicas = [free_port() for _ in range(replicas)]
        for port in self.replicas:
            self._server(port, "--replicaof", "127.0.0.1", str(upstream))
        self.down_after_ms = down_after_ms
        self.quorum = 1 if sentinels == 1 else 2
        self.sentinels = [self.start_sentinel() for _ in range(sentinels)]
        self.wait_ready()

    def start_sentinel(self, extra: str = "") -> int:
        """Start a Sentinel of the service (``extra``: more lines of its configuration); its port."""
        port = free_port()
        conf = os.path.join(self.dir, f"sentinel-{port}.conf")
        listen = f"port {port}\n"
        if self.tls:
            ca, cert, key = self.tls
            listen = f"port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n"
            listen += "tls-auth-clients no\ntls-replication yes\n"
        with open(conf, "w") as f:
            f.write(
                f"{listen}bind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} {self.quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n{extra}"
            )
        self._start(port, [REDIS_SERVER, conf, "--sentinel"])
        return port

    def _server(self, port: int, *extra: str) -> None:
        listen = ["--port", str(port)]
        if self.tls:
            ca, cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key]
            listen += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no", "--tls-replication", "yes"]
        args = [REDIS_SERVER, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self.dir, "--dbfilename", f"dump-{port}.rdb", "--repl-diskless-sync-delay", "0", *extra]
        self._start(port, args)

    def _start(self, port: int, args: list[str]) -> None:
        log = open(os.path.join(self.dir, f"{port}.log"), "wb")
        self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"redis-server on port {port} did not start"
                time.sleep(0.02)

    def client(self, port: int) -> redis.Redis:
        if self.tls:
            return redis.Redis("127.0.0.1", port, socket_timeout=2, ssl=True, ssl_ca_certs=self.tls[0])
        return redis.Redis("127.0.0.1", port, socket_timeout=2)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every replica is in sync and every Sentinel sees them."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ok = all(self.client(p).info("replication")["master_link_status"] == "up" for p in self.replicas)
                for port in self.sentinels:
                    seen = self.client(port).execute_command("SENTINEL", "REPLICAS", SERVICE)
                    ok = ok and len(seen) >= len(self.replicas)
            except (redis.RedisError, KeyError):
                ok = False
            if ok:
                return
            assert time.monotonic() < deadline, "the replicas or the Sentinels did not come up"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        if self.tls:
            return f"rediss+sentinel://{hosts}/{SERVICE}?ssl_ca_certs={self.tls[0]}"
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def current_primary(self) -> int:
        """The port the (first) Sentinel names as the primary."""
        _, port = self.client(self.sentinels[0]).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; return its port."""
        port = self.current_primary()
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait()
        return port

    def demote_primary(self) -> int:
        """Fail over without killing (``SENTINEL FAILOVER``): the primary becomes a replica; return its port."""
        port = self.current_primary()
        self.client(self.sentinels[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)
        return port

    def wait_failover(self, old: int, timeout: float = 30.0) -> int:
        """Until a Sentinel names a primary other than ``old``, and it answers as one; return its port."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                port = self.current_primary()
                if port != old and self.client(port).info("replication")["role"] == "master":
                    return port
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.1)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait()
        if self.proxy is not None:
            self.proxy.close()
        shutil.rmtree(self.dir, ignore_errors=True)

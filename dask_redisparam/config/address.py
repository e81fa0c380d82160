"""Where a Redis server is and how to log in: a validated, immutable value object.

:class:`RedisAddress` is what every other module passes around instead of loose host/port/password values. Its
``repr`` and :meth:`RedisAddress.describe` never show the password; :meth:`RedisAddress.to_url` shows it only
when asked to.

Examples
--------
>>> a = RedisAddress.from_url("redis://alice:s3cret@db.example:6380/2")
>>> a
RedisAddress('redis://alice:*****@db.example:6380/2')
>>> a.describe()
'db.example:6380'
>>> RedisAddress(path="/tmp/r.sock").describe()
'unix:/tmp/r.sock'
>>> RedisAddress.from_url("rediss://db:6380/0?ssl_ca_certs=/etc/ca.pem").ca_file
'/etc/ca.pem'
>>> c = RedisAddress.from_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000")
>>> c.kind, c.nodes, c.describe()
('cluster', (('10.0.0.1', 7000), ('10.0.0.2', 7000)), 'cluster 10.0.0.1:7000,10.0.0.2:7000')
>>> s = RedisAddress.from_url("redis+sentinel://s1:26379,s2:26379/mymaster?sentinel_password=x")
>>> s.kind, s.service, s.describe(), s
('sentinel', 'mymaster', 'sentinel s1:26379,s2:26379 service mymaster', \
RedisAddress('redis+sentinel://s1:26379,s2:26379/mymaster?db=0&sentinel_password=*****'))
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..errors import ConfigurationError

__all__ = ["KINDS", "RedisAddress", "parse_port"]

KINDS = ("server", "cluster", "sentinel")
"""What an address points at: one server, the seed nodes of a Redis Cluster, or the Sentinels of a service."""
_SCHEMES = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}

_TLS_FILES = ("ca_file", "cert_file", "key_file")
# URL query parameter (redis-py's keyword) -> RedisAddress field
_QUERY_FILES = {"ssl_ca_certs": "ca_file", "ssl_certfile": "cert_file", "ssl_keyfile": "key_file"}


def parse_port(value: object, what: str) -> int:
    """Return ``value`` as a TCP port, or raise :class:`ConfigurationError` naming ``what``.

    Examples
    --------
    >>> parse_port("6379", "REDIS_PORT")
    6379
    >>> parse_port("tcp://10.0.0.1:6379", "REDIS_PORT")
    Traceback (most recent call last):
    ...
    dask_redisparam.errors.ConfigurationError: REDIS_PORT='tcp://10.0.0.1:6379' is not an integer port \
(Kubernetes sets REDIS_PORT=tcp://host:port for a service named 'redis'; set REDISPARAM_PORT instead)
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        port: int = int(value)  # type: ignore[call-overload]
        if isinstance(value, float) and port != value:
            raise TypeError
    except (TypeError, ValueError):
        hint = ""
        if isinstance(value, str) and "://" in value:
            hint = (
                " (Kubernetes sets REDIS_PORT=tcp://host:port for a service named 'redis'; set REDISPARAM_PORT instead)"
            )
        raise ConfigurationError(f"{what}={value!r} is not an integer port{hint}") from None
    if not 0 < port < 65536:
        raise ConfigurationError(f"{what}={value!r} is not a TCP port (1-65535)")
    return port


@dataclasses.dataclass(frozen=True, repr=False)
class RedisAddress:
    """A Redis server and the credentials to use it.

    Parameters
    ----------
    host : str
        Host name or IP address (ignored when ``path`` is set).
    port : int
        TCP port.
    path : str, optional
        A Unix socket path; when set, the server is reached through it.
    password : str, optional
        The password (``AUTH``); never shown by ``repr``.
    username : str, optional
        The ACL user name.
    db : int
        The database number.
    tls : bool
        Use TLS (``rediss://``); the server's certificate is always verified. Any of the files below turns it on.
    ca_file : str, optional
        The certificate authorities (PEM) that the server's certificate must chain to; default the system's. In a
        URL: the query parameter ``ssl_ca_certs`` (redis-py's name).
    cert_file, key_file : str, optional
        A client certificate and its private key (PEM), for servers that require one (``tls-auth-clients``). In a
        URL: ``ssl_certfile`` and ``ssl_keyfile``.
    kind : {"server", "cluster", "sentinel"}
        One server (``redis://``, ``rediss://``, ``unix://``); the seed nodes of a Redis Cluster
        (``redis+cluster://host:port[,host:port...]``, ``rediss+cluster://``); or the Sentinels that know the
        primary of ``service`` (``redis+sentinel://host:port[,host:port...]/service``, ``rediss+sentinel://``).
        ``host`` and ``port`` are then those of the first node.
    nodes : tuple of (str, int)
        The cluster's seed nodes or the Sentinels, in the URL's order; ``((host, port),)`` when empty.
    service : str, optional
        The Sentinel service (``sentinel monitor <service> ...``) whose primary to use; required for a sentinel
        address.
    sentinel_username, sentinel_password : str, optional
        Credentials of the Sentinels themselves (URL query ``sentinel_username``, ``sentinel_password``); the URL's
        user and password are those of the data servers. The password is never shown.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    password: str | None = dataclasses.field(default=None, compare=True)
    username: str | None = None
    db: int = 0
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    kind: str = "server"
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigurationError(f"host={self.host!r} must be a non-empty string")
        object.__setattr__(self, "port", parse_port(self.port, "port"))
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ConfigurationError(f"path={self.path!r} must be a non-empty string")
        for name in ("password", "username", "sentinel_username", "sentinel_password", "service", *_TLS_FILES):
            value = getattr(self, name)
            if value == "":
                object.__setattr__(self, name, None)
            elif value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name} must be a string")
        if isinstance(self.db, bool) or not isinstance(self.db, int) or self.db < 0:
            raise ConfigurationError(f"db={self.db!r} must be a non-negative integer")
        if any(getattr(self, name) is not None for name in _TLS_FILES):
            if self.path is not None:
                raise ConfigurationError("TLS files (ca_file, cert_file, key_file) need TCP, not a Unix socket path")
            object.__setattr__(self, "tls", True)
        if self.path is not None and self.tls:
            raise ConfigurationError("tls=True cannot be used with a Unix socket path")
        self._check_kind()

    def _check_kind(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"kind={self.kind!r} must be one of {', '.join(KINDS)}")
        nodes = tuple((n[0], parse_port(n[1], f"port of node {n[0]!r}")) for n in self.nodes)
        for host, _ in nodes:
            if not isinstance(host, str) or not host:
                raise ConfigurationError(f"node host {host!r} must be a non-empty string")
        if self.kind == "server":
            if nodes:
                raise ConfigurationError("nodes are for a cluster or sentinel address (kind='cluster'/'sentinel')")
            if self.service is not None or self.sentinel_password is not None or self.sentinel_username is not None:
                raise ConfigurationError("service and sentinel credentials are for a sentinel address")
            return
        if self.path is not None:
            raise ConfigurationError(f"a {self.kind} address needs TCP nodes, not a Unix socket path")
        if not nodes:
            nodes = ((self.host, self.port),)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "host", nodes[0][0])
        object.__setattr__(self, "port", nodes[0][1])
        if self.kind == "cluster":
            if self.db != 0:
                raise ConfigurationError(f"a Redis Cluster has only database 0, not db={self.db}")
            if self.service is not None or self.sentinel_password is not None or self.sentinel_username is not None:
                raise ConfigurationError("service and sentinel credentials are for a sentinel address")
        elif self.service is None:
            raise ConfigurationError(
                "a sentinel address needs the service name: redis+sentinel://host:port[,host:port...]/service"
            )

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse a ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or ``redis+sentinel://`` URL.

        Examples
        --------
        >>> RedisAddress.from_url("unix:///run/redis.sock?db=3").db
        3
        >>> RedisAddress.from_url("http://x")
        Traceback (most recent call last):
        ...
        dask_redisparam.errors.ConfigurationError: url 'http://x' must start with redis://, rediss://, unix://, \
redis+cluster:// (rediss+cluster://) or redis+sentinel:// (rediss+sentinel://)
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"url={url!r} must be a string")
        parts = urlsplit(url)
        if parts.scheme not in (*_SCHEMES, "unix"):
            shown = cls._mask_url(url)
            raise ConfigurationError(
                f"url {shown!r} must start with redis://, rediss://, unix://, redis+cluster:// (rediss+cluster://)"
                " or redis+sentinel:// (rediss+sentinel://)"
            )
        if _SCHEMES.get(parts.scheme, ("server",))[0] != "server":
            return cls._from_multi_url(url)
        query = parse_qs(parts.query)
        files = {field: query[name][-1] for name, field in _QUERY_FILES.items() if query.get(name, [""])[-1]}
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        db_text = query.get("db", [""])[0]
        if parts.scheme != "unix" and parts.path.strip("/"):
            db_text = parts.path.strip("/")
        try:
            db = int(db_text) if db_text else 0
        except ValueError:
            raise ConfigurationError(f"url {cls._mask_url(url)!r}: database {db_text!r} is not an integer") from None
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigurationError(f"url {cls._mask_url(url)!r} names no socket path")
            if files:
                names = ", ".join(name for name, field in _QUERY_FILES.items() if field in files)
                raise ConfigurationError(
                    f"url {cls._mask_url(url)!r}: TLS ({names}) is not available over a Unix socket"
                )
            return cls(path=unquote(parts.path), password=password, username=username, db=db)
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigurationError(f"url {cls._mask_url(url)!r} has an invalid port") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            password=password,
            username=username,
            db=db,
            tls=parts.scheme == "rediss",
            ca_file=files.get("ca_file"),
            cert_file=files.get("cert_file"),
            key_file=files.get("key_file"),
        )

    @classmethod
    def _from_multi_url(cls, url: str) -> RedisAddress:
        """Parse a ``redis+cluster://`` or ``redis+sentinel://`` URL (several ``host:port`` in the netloc)."""
        shown = cls._mask_url(url)
        parts = urlsplit(url)
        kind, tls = _SCHEMES[parts.scheme]
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        username = password = None
        if userinfo:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        nodes = []
        for item in hostlist.split(","):
            host, port = _split_host_port(item.strip(), shown)
            nodes.append((host, port))
        query = parse_qs(parts.query)
        known = {"db", "sentinel_password", "sentinel_username", *_QUERY_FILES}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ConfigurationError(f"url {shown!r}: unknown query parameter(s) {', '.join(unknown)}")
        files = {field: query[name][-1] for name, field in _QUERY_FILES.items() if query.get(name, [""])[-1]}
        path = parts.path.strip("/")
        db_text = query.get("db", [""])[-1]
        service = None
        if kind == "sentinel":
            service, _, rest = path.partition("/")
            service = unquote(service) or None
            if rest:
                db_text = rest
        elif path:
            db_text = path
        try:
            db = int(db_text) if db_text else 0
        except ValueError:
            raise ConfigurationError(f"url {shown!r}: database {db_text!r} is not an integer") from None
        try:
            return cls(
                host=nodes[0][0],
                port=nodes[0][1],
                password=password,
                username=username,
                db=db,
                tls=tls,
                ca_file=files.get("ca_file"),
                cert_file=files.get("cert_file"),
                key_file=files.get("key_file"),
                kind=kind,
                nodes=tuple(nodes),
                service=service,
                sentinel_username=query.get("sentinel_username", [None])[-1],
                sentinel_password=query.get("sentinel_password", [None])[-1],
            )
        except ConfigurationError as e:
            raise ConfigurationError(f"url {shown!r}: {e}") from None

    @staticmethod
    def _mask_url(url: str) -> str:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            if ":" in userinfo:
                netloc = userinfo.partition(":")[0] + ":*****@" + hosts
        query = re.sub(r"(sentinel_password=)[^&]*", r"\1*****", parts.query)
        return parts._replace(netloc=netloc, query=query).geturl()

    def to_url(self, *, show_password: bool = False) -> str:
        """Return the address as a URL; the password is masked unless ``show_password``.

        The TLS files are in the query (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``), so that
        :meth:`from_url` gives back the same address.

        Examples
        --------
        >>> RedisAddress(port=7000, password="pw").to_url()
        'redis://:*****@127.0.0.1:7000/0'
        >>> RedisAddress(port=7000, ca_file="/etc/ca.pem").to_url()
        'rediss://127.0.0.1:7000/0?ssl_ca_certs=/etc/ca.pem'
        """
        secret = self.password if show_password else "*****"
        auth = ""
        if self.username or self.password is not None:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                auth += ":" + (quote(secret or "", safe="") if show_password else "*****")
            auth += "@"
        if self.path is not None:
            return f"unix://{auth}{quote(self.path)}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        query = "&".join(
            f"{name}={quote(value, safe='/')}"
            for name, field in _QUERY_FILES.items()
            if (value := getattr(self, field)) is not None
        )
        if self.kind == "server":
            return f"{scheme}://{auth}{_host_port(self.host, self.port)}/{self.db}" + (f"?{query}" if query else "")
        hosts = ",".join(_host_port(h, p) for h, p in self.nodes)
        if self.kind == "cluster":
            return f"{scheme}+cluster://{auth}{hosts}/0" + (f"?{query}" if query else "")
        extra = [f"db={self.db}"]
        if self.sentinel_username is not None:
            extra.append(f"sentinel_username={quote(self.sentinel_username, safe='')}")
        if self.sentinel_password is not None:
            shown = quote(self.sentinel_password, safe="") if show_password else "*****"
            extra.append(f"sentinel_password={shown}")
        query = "&".join([*extra, *([query] if query else [])])
        return f"{scheme}+sentinel://{auth}{hosts}/{quote(self.service or '', safe='')}?{query}"

    def describe(self) -> str:
        """``host:port``, ``unix:<path>``, ``cluster h:p,h:p`` or ``sentinel h:p,h:p service s``: what error
        messages name; never holds secrets."""
        if self.path is not None:
            return f"unix:{self.path}"
        if self.kind == "server":
            return _host_port(self.host, self.port)
        hosts = ",".join(_host_port(h, p) for h, p in self.nodes)
        if self.kind == "cluster":
            return f"cluster {hosts}"
        return f"sentinel {hosts} service {self.service}"

    def __repr__(self) -> str:
        return f"RedisAddress({self.to_url()!r})"


def _host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(item: str, shown: str) -> tuple[str, int]:
    """``"h:p"``, ``"[v6]:p"`` or ``"h"`` (port 6379, 26379 is not assumed) -> ``(host, port)``."""
    if not item:
        raise ConfigurationError(f"url {shown!r} has an empty host")
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ConfigurationError(f"url {shown!r} has an empty host")
    if not port_text:
        return host, 6379
    try:
        return host, parse_port(port_text, "port")
    except ConfigurationError:
        raise ConfigurationError(f"url {shown!r} has an invalid port {port_text!r} (host {host!r})") from None

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
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..errors import ConfigurationError

__all__ = ["RedisAddress", "parse_port"]

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

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigurationError(f"host={self.host!r} must be a non-empty string")
        object.__setattr__(self, "port", parse_port(self.port, "port"))
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ConfigurationError(f"path={self.path!r} must be a non-empty string")
        for name in ("password", "username", *_TLS_FILES):
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

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse a ``redis://``, ``rediss://`` or ``unix://`` URL.

        Examples
        --------
        >>> RedisAddress.from_url("unix:///run/redis.sock?db=3").db
        3
        >>> RedisAddress.from_url("http://x")
        Traceback (most recent call last):
        ...
        dask_redisparam.errors.ConfigurationError: url 'http://x' must start with redis://, rediss:// or unix://
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"url={url!r} must be a string")
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            shown = cls._mask_url(url)
            raise ConfigurationError(f"url {shown!r} must start with redis://, rediss:// or unix://")
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

    @staticmethod
    def _mask_url(url: str) -> str:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":*****@", 1)
        return parts._replace(netloc=netloc).geturl()

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "&".join(
            f"{name}={quote(value, safe='/')}"
            for name, field in _QUERY_FILES.items()
            if (value := getattr(self, field)) is not None
        )
        return f"{scheme}://{auth}{host}:{self.port}/{self.db}" + (f"?{query}" if query else "")

    def describe(self) -> str:
        """``host:port`` or ``unix:<path>``: what error messages name; never holds secrets."""
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"RedisAddress({self.to_url()!r})"

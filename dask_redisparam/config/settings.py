"""The validated, immutable configuration behind :class:`RedisParam`.

:class:`Settings` checks every value when it is built and raises :class:`ConfigurationError` naming the
setting and showing the bad value (never a password). It also resolves, once, which Redis server to use
(:attr:`Settings.address`); ``None`` means that no server is configured and the embedded one will be used.

Server resolution, highest precedence first (empty environment values count as unset):

1. the arguments ``host``, ``port``, ``password``, ``username``, ``tls_*`` over the argument ``url``;
2. the environment variable ``REDISPARAM_URL``;
3. ``REDISPARAM_HOST``/``_PORT``/``_PASSWORD``/``_USERNAME``, each falling back to ``REDIS_HOST`` etc., and
   ``REDISPARAM_TLS_CA_FILE``/``_TLS_CERT_FILE``/``_TLS_KEY_FILE``;
4. the dask config key ``redisparam.url``;
5. the dask config keys ``redisparam.host``, ``.port``, ``.password``, ``.username``, ``.tls_ca_file``,
   ``.tls_cert_file``, ``.tls_key_file``.

The highest source that names a location (url, host or port) gives the address (a lone host gets port 6379, a
lone port host 127.0.0.1). Each credential (password, username) then resolves on its own, as R resolves each
field: the highest source that sets it wins, except that a lower source never replaces a credential that the
location's own source sets (``--host h`` plus ``REDISPARAM_PASSWORD`` from a secret logs in with that password).
A password or username with no location anywhere is an error.

The TLS files (``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``; in a URL the query parameters
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``) resolve as the credentials do. They must be readable files,
a client certificate needs its key, and any of them turns TLS on (as ``rediss://`` does).

Examples
--------
>>> s = Settings(2, jobname="demo", url="redis://:pw@db:6380", environ={})
>>> s.workers, s.address.describe()
(2, 'db:6380')
>>> "pw" in repr(s)
False
>>> Settings(jobname="demo", environ={"REDISPARAM_HOST": "h", "REDIS_PORT": "7000"}).address
RedisAddress('redis://h:7000/0')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import dask.config

from ..errors import ConfigurationError
from .address import RedisAddress
from .checks import THRESHOLDS
from .names import DURABLE_JOBNAME, SECRET_ENV, SECRET_FILE_ENV
from .resolution import Layer, ambient_layers, resolve_address
from .schema import SERVER_FIELDS, SETTINGS

__all__ = ["THRESHOLDS", "Settings", "config_overrides", "default_worker_count"]


def default_worker_count() -> int:
    """The number of CPUs this process may use (at least 1): the default ``workers`` of a local run.

    Examples
    --------
    >>> default_worker_count() >= 1
    True
    """
    try:
        count: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count()
    return max(1, count or 1)


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Settings:
    """Validated, immutable settings of a :class:`RedisParam`.

    Parameters
    ----------
    workers : int, optional
        The first setting, which may be given by position (as R's).
    **settings
        The other settings, by name, as :class:`~dask_redisparam.RedisParam` documents them (declared in
        :data:`dask_redisparam.config.schema.SETTINGS`, whose defaults apply to those not given).
    environ : Mapping[str, str], optional
        The environment to read (default ``os.environ``); not stored.

    Attributes
    ----------
    address : RedisAddress or None
        The resolved server; None when the embedded server will be used.

    Examples
    --------
    >>> s = Settings(jobname="j1", is_worker=False, threshold="debug", environ={})
    >>> s.workers, s.threshold, s.threshold_level, s.address
    (1000, 'DEBUG', 10, None)
    >>> s.replace(retries=2).retries
    2
    >>> Settings(queue_multiplier=-1)
    Traceback (most recent call last):
    ...
    dask_redisparam.errors.ConfigurationError: queue_multiplier=-1 must be a number > 0
    """

    # BEGIN GENERATED: settings-fields
    workers: int
    jobname: str
    is_worker: bool | None
    host: str | None
    port: int | None
    password: str | None
    username: str | None
    url: str | None
    queue_multiplier: float
    stop_on_error: bool
    timeout: float | None
    log: bool
    threshold: str
    logdir: str | None
    resultdir: str | None
    resultdir_all: bool
    progressbar: bool
    rng_seed: int | None
    tasks: int | None
    allowed_failures: int
    retries: int
    heartbeat_interval: float
    heartbeat_ttl: float
    redo_ttl: float
    resume_ttl: float
    start_timeout: float
    dashboard: bool
    durable: bool
    state_dir: str | None
    durable_idle: float
    exportglobals: bool
    export_env: tuple[str, ...]
    shared_filesystem: bool
    cluster: bool
    replicas: int
    replicas_timeout: float
    replicas_required: bool
    resources: tuple[tuple[str, float], ...]
    secret: Any
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    # END GENERATED: settings-fields
    address: RedisAddress | None = dataclasses.field(init=False)
    _ambient: tuple[Layer, ...] = dataclasses.field(init=False, compare=False)
    _workers_given: bool = dataclasses.field(init=False, compare=False)
    _secret_in_env: bool = dataclasses.field(init=False, compare=False)

    def __init__(
        self, workers: int | None = None, *, environ: Mapping[str, str] | None = None, **settings: Any
    ) -> None:
        unknown = sorted(set(settings) - _NAMES)
        if unknown:
            raise TypeError(f"Settings.__init__() got an unexpected keyword argument {unknown[0]!r}")
        values = {s.name: settings.get(s.name, s.default) for s in SETTINGS}
        values["workers"] = workers
        env = os.environ if environ is None else environ
        self._set(values, ambient_layers(env), address=None, resolve=True)
        object.__setattr__(self, "_secret_in_env", bool(env.get(SECRET_ENV) or env.get(SECRET_FILE_ENV)))

    def _set(self, values: Mapping[str, Any], ambient: tuple[Layer, ...], address: Any, resolve: bool) -> None:
        """Validate ``values`` (the constructor's arguments), in table order, and store them."""
        out: dict[str, Any] = {}
        if values["jobname"] is None and values.get("durable") is True:
            values = {**values, "jobname": DURABLE_JOBNAME}  # a rerun must find the runs of the process before it
        for setting in SETTINGS:
            out[setting.name] = setting.check(setting.name, values[setting.name], out)
        out["_workers_given"] = out["workers"] is not None
        if out["workers"] is None:
            out["workers"] = default_worker_count() if out["is_worker"] is None else (1 if out["is_worker"] else 1000)
        if resolve:
            explicit = {f: (f, out[f]) for f in SERVER_FIELDS if out[f] is not None}
            address = resolve_address((explicit, *ambient))
        if out["cluster"] and address is not None and address.kind != "cluster":
            if address.kind != "server" or address.path is not None:
                raise ConfigurationError(
                    f"cluster=True needs TCP seed nodes of a Redis Cluster, not {address.describe()}"
                )
            address = dataclasses.replace(address, kind="cluster", nodes=((address.host, address.port),))
        elif out["cluster"] and address is None:
            raise ConfigurationError("cluster=True needs a Redis Cluster's node: give url, or host and port")
        out["address"] = address
        out["_ambient"] = ambient
        for name, value in out.items():
            object.__setattr__(self, name, value)

    @property
    def threshold_level(self) -> int:
        """The Python logging level of :attr:`threshold` (TRACE is 5, FATAL is 50)."""
        return THRESHOLDS[self.threshold]

    def replace(self, **changes: Any) -> Settings:
        """Return a validated copy with ``changes`` applied.

        The copy keeps the jobname and the resolved address; if a server setting (host, port, password,
        username, url, tls_*) changes, the address is resolved again against the environment and dask config seen
        when ``self`` was built (neither is read again). A defaulted ``workers`` follows a new ``is_worker``.

        Examples
        --------
        >>> s = Settings(url="redis://h:1", jobname="j", environ={})
        >>> s.replace(password="x").address.to_url(show_password=True)
        'redis://:x@h:1/0'
        >>> s.replace(workers=3).jobname, s.replace(workers=3).workers
        ('j', 3)
        """
        names = [f.name for f in dataclasses.fields(self) if f.init]
        unknown = set(changes) - set(names)
        if unknown:
            raise TypeError(f"replace() got unexpected keyword arguments {sorted(unknown)}")
        values: dict[str, Any] = {name: getattr(self, name) for name in names}
        if not self._workers_given and "is_worker" in changes and "workers" not in changes:
            values["workers"] = None
        values.update(changes)
        new = object.__new__(Settings)
        resolve = any(field in changes for field in SERVER_FIELDS)
        new._set(values, self._ambient, address=self.address, resolve=resolve)
        object.__setattr__(new, "_secret_in_env", self._secret_in_env)
        return new

    def to_env(self) -> dict[str, str]:
        """The environment variables that tell a spawned worker process where and what to serve.

        ``REDISPARAM_URL`` holds the password in clear text: pass it only to child processes, never log it.

        Examples
        --------
        >>> Settings(jobname="j", host="h", password="pw", environ={}).to_env()
        {'REDISPARAM_URL': 'redis://:pw@h:6379/0', 'REDISPARAM_JOBNAME': 'j'}
        """
        env: dict[str, str] = {}
        if self.address is not None:
            env["REDISPARAM_URL"] = self.address.to_url(show_password=True)
        env["REDISPARAM_JOBNAME"] = self.jobname
        return env

    def __repr__(self) -> str:
        return self.describe(signed=self.secret is not None or self._secret_in_env)

    def describe(self, signed: bool) -> str:
        """The repr, with ``secret='*****'`` if ``signed`` (messages are signed, by whatever secret), else None.

        Examples
        --------
        >>> Settings(2, jobname="j", environ={}).describe(signed=True).endswith("secret='*****')")
        True
        """
        parts = []
        for f in dataclasses.fields(self):
            if f.name in SERVER_FIELDS[1:] or f.name == "address" or f.name.startswith("_"):
                continue
            if f.name == SERVER_FIELDS[0]:  # the server settings are shown once, as the address with a masked password
                shown = None if self.address is None else self.address.to_url()
                parts.append(f"address={shown!r}")
            elif f.name == "secret":
                parts.append(f"secret={'*****' if signed else None!r}")
            else:
                parts.append(f"{f.name}={getattr(self, f.name)!r}")
        return f"Settings({', '.join(parts)})"


_NAMES = {s.name for s in SETTINGS}


def config_overrides(kwargs: dict[str, Any], given_workers: bool = False) -> dict[str, Any]:
    """``kwargs`` completed with the dask config keys ``redisparam.<setting>`` for the settings not given.

    So ``dask.config.set({"redisparam.queue_multiplier": 4})`` or ``DASK_REDISPARAM__RNG_SEED=7`` applies to every
    :class:`~dask_redisparam.RedisParam` made meanwhile; an argument wins. The server settings are resolved by
    :class:`Settings` (with the environment variables before the config); a secret is never read from config.

    Examples
    --------
    >>> with dask.config.set({"redisparam.retries": 2}):
    ...     config_overrides({"timeout": 5})
    {'timeout': 5, 'retries': 2}
    """
    out = dict(kwargs)
    for setting in SETTINGS:
        name = setting.name
        if name in out or not setting.config or setting.server or (name == "workers" and given_workers):
            continue
        value = dask.config.get(f"redisparam.{name}", None)
        if isinstance(value, list):  # YAML has no tuples
            value = tuple(value)
        if value is not None and value != setting.default:
            out[name] = value
    return out

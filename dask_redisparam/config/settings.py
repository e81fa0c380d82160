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
import inspect
import math
import numbers
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dask.config

from ..errors import ConfigurationError
from .address import RedisAddress, parse_port
from .names import SECRET_ENV, SECRET_FILE_ENV, validate_name
from .resolution import (
    _CREDENTIALS,
    _SERVER_FIELDS,
    _TLS_FIELDS,
    _ambient_layers,
    _credential,
    _Layer,
    _resolve,
    _text,
)

__all__ = ["THRESHOLDS", "Settings", "config_overrides", "default_worker_count"]

#: Log thresholds, as BiocParallel's, and the Python logging level of each.
THRESHOLDS: Mapping[str, int] = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}


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


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ConfigurationError(f"{name}={value!r} must be {kind} integer")
    return int(value)


def _number(name: str, value: object, above: float = 0.0, bound: str = "0") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > above:
        raise ConfigurationError(f"{name}={value!r} must be a number > {bound}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name}={value!r} must be a finite number > {bound}")
    return float(value)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name}={value!r} must be True or False")
    return value


def _directory(name: str, value: object) -> str | None:
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"{name}={value!r} must be None or a directory path (str or os.PathLike)")
    if not os.path.isdir(path):
        raise ConfigurationError(f"{name}={path!r} is not an existing directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{name}={path!r} is not a writable directory")
    return path


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Settings:
    """Validated, immutable settings of a :class:`RedisParam`.

    Parameters
    ----------
    workers : int, optional
        Number of workers. Default: the local CPU count when ``is_worker`` is None, 1000 (a cap on the
        workers that may listen on the job) when False, 1 when True.
    jobname : str, optional
        Name shared by the manager and its workers; default a fresh unique id.
    is_worker : bool or None
        None: manager plus local workers; True: worker only; False: manager only.
    host, port, password, username, url : optional
        The Redis server; see the module documentation for how they combine with the environment.
    queue_multiplier : float
        Tasks queued per worker ahead of completion (> 0).
    stop_on_error : bool
        Stop the run at the first failed task.
    timeout : float, optional
        Seconds allowed to each task.
    log : bool
        Collect the workers' log records on the manager.
    threshold : str
        One of TRACE, DEBUG, INFO, WARN, ERROR, FATAL (any case).
    logdir, resultdir : str or os.PathLike, optional
        Existing writable directories for log files (needs ``log=True``) and for results.
    progressbar : bool
        Show a progress bar.
    rng_seed : int, optional
        Seed of the reproducible per-task random streams.
    tasks : int, optional
        None: one task per element; 0: one chunk per worker; n: n chunks.
    allowed_failures : int
        How often a task may be lost with its worker before the run fails.
    retries : int
        How often a task that raised is run again.
    redo_ttl : float
        Seconds a failed run keeps its computed values in Redis for ``redo=`` (0: not kept).
    exportglobals : bool
        Apply the manager's dask config (except its ``redisparam.*`` settings) on the workers while they unpickle and
        run its tasks.
    export_env : sequence of str
        Names of environment variables whose manager values apply on the workers during its tasks.
    shared_filesystem : bool
        Declare that every worker of the job sees one shared filesystem at dask's ``temporary_directory`` (default
        the system's temp directory), so that graphs with dask's disk-based shuffle may run on workers this param
        did not start. Otherwise such a graph fails at once with ``UnsafeShuffle``, unless only the param's own
        local workers serve the job.
    secret : str, bytes or mapping, optional
        The shared secret that signs task messages, values and records (HMAC-SHA256); a mapping of key id to
        secret rotates keys (the first signs). Default: ``REDISPARAM_SECRET`` or ``REDISPARAM_SECRET_FILE``; with the
        embedded server, a fresh random secret for its private pool. Never shown: ``repr`` has ``secret='*****'``
        when this setting or the environment (``REDISPARAM_SECRET`` / ``_FILE``) gives one, else ``secret=None``.
    heartbeat_interval, heartbeat_ttl : float
        Seconds between worker heartbeats, and after which a silent worker counts as lost (> interval).
    tls_ca_file : str or os.PathLike, optional
        The certificate authorities (PEM file) that the server's TLS certificate must chain to; default the
        system's. Turns TLS on, as ``rediss://`` does.
    tls_cert_file, tls_key_file : str or os.PathLike, optional
        A TLS client certificate and its private key (PEM files, given together), for a server that requires
        client certificates. Turn TLS on.
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
    progressbar: bool
    rng_seed: int | None
    tasks: int | None
    allowed_failures: int
    retries: int
    heartbeat_interval: float
    heartbeat_ttl: float
    redo_ttl: float
    exportglobals: bool
    export_env: tuple[str, ...]
    shared_filesystem: bool
    secret: Any
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    address: RedisAddress | None = dataclasses.field(init=False)
    _ambient: tuple[_Layer, ...] = dataclasses.field(init=False, compare=False)
    _workers_given: bool = dataclasses.field(init=False, compare=False)
    _secret_in_env: bool = dataclasses.field(init=False, compare=False)

    def __init__(
        self,
        workers: int | None = None,
        *,
        jobname: str | None = None,
        is_worker: bool | None = None,
        host: str | None = None,
        port: int | str | None = None,
        password: str | None = None,
        username: str | None = None,
        url: str | None = None,
        queue_multiplier: float = 2.0,
        stop_on_error: bool = True,
        timeout: float | None = None,
        log: bool = False,
        threshold: str = "INFO",
        logdir: str | os.PathLike[str] | None = None,
        resultdir: str | os.PathLike[str] | None = None,
        progressbar: bool = False,
        rng_seed: int | None = None,
        tasks: int | None = None,
        allowed_failures: int = 3,
        retries: int = 0,
        heartbeat_interval: float = 1.0,
        heartbeat_ttl: float = 10.0,
        redo_ttl: float = 3600.0,
        exportglobals: bool = True,
        export_env: Sequence[str] = (),
        shared_filesystem: bool = False,
        secret: str | bytes | Mapping[str, str | bytes] | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        ambient = _ambient_layers(env)
        self._set(locals(), ambient, address=None, resolve=True)
        object.__setattr__(self, "_secret_in_env", bool(env.get(SECRET_ENV) or env.get(SECRET_FILE_ENV)))

    def _set(self, values: dict[str, Any], ambient: tuple[_Layer, ...], address: Any, resolve: bool) -> None:
        """Validate ``values`` (the constructor's arguments) and store them."""
        out: dict[str, Any] = {}
        is_worker = values["is_worker"]
        if is_worker is not None and not isinstance(is_worker, bool):
            raise ConfigurationError(f"is_worker={is_worker!r} must be None, True or False")
        workers = values["workers"]
        out["_workers_given"] = workers is not None
        if workers is None:
            workers = default_worker_count() if is_worker is None else (1 if is_worker else 1000)
        out["workers"] = _int("workers", workers, 1)
        jobname = uuid.uuid4().hex[:16] if values["jobname"] is None else values["jobname"]
        try:
            out["jobname"] = validate_name(jobname, "jobname")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        out["is_worker"] = is_worker
        out["host"] = None if values["host"] is None else _text("host", values["host"])
        out["port"] = None if values["port"] is None else parse_port(values["port"], "port")
        for field in _CREDENTIALS:  # "" means unset, as in R
            value = values[field]
            out[field] = None if value in (None, "") else _credential(field, field, value)
        if values["url"] is not None and not isinstance(values["url"], str):
            raise ConfigurationError(f"url={values['url']!r} must be a string")
        out["url"] = values["url"]
        out["queue_multiplier"] = _number("queue_multiplier", values["queue_multiplier"])
        for field in ("stop_on_error", "log", "progressbar"):
            out[field] = _bool(field, values[field])
        timeout = values["timeout"]
        out["timeout"] = None if timeout is None else _number("timeout", timeout)
        threshold = values["threshold"]
        if not isinstance(threshold, str) or threshold.upper() not in THRESHOLDS:
            raise ConfigurationError(f"threshold={threshold!r} must be one of {', '.join(THRESHOLDS)}")
        out["threshold"] = threshold.upper()
        out["logdir"] = _directory("logdir", values["logdir"])
        if out["logdir"] is not None and not out["log"]:
            raise ConfigurationError(f"logdir={out['logdir']!r} requires log=True")
        out["resultdir"] = _directory("resultdir", values["resultdir"])
        for field, minimum in (("rng_seed", 0), ("tasks", 0)):
            out[field] = None if values[field] is None else _int(field, values[field], minimum)
        for field in ("allowed_failures", "retries"):
            out[field] = _int(field, values[field], 0)
        out["heartbeat_interval"] = interval = _number("heartbeat_interval", values["heartbeat_interval"])
        redo_ttl = values["redo_ttl"]
        if isinstance(redo_ttl, bool) or not isinstance(redo_ttl, numbers.Real) or not 0 <= float(redo_ttl) < math.inf:
            raise ConfigurationError(f"redo_ttl={redo_ttl!r} must be a finite number >= 0 (seconds; 0: keep nothing)")
        out["redo_ttl"] = float(redo_ttl)
        out["exportglobals"] = _bool("exportglobals", values["exportglobals"])
        out["shared_filesystem"] = _bool("shared_filesystem", values["shared_filesystem"])
        export_env = values["export_env"]
        if isinstance(export_env, str) or not all(isinstance(n, str) and n and "=" not in n for n in export_env):
            raise ConfigurationError(f"export_env={export_env!r} must be a list of environment variable names")
        out["export_env"] = tuple(export_env)
        secret = values["secret"]
        if secret is not None and not isinstance(secret, (str, bytes, Mapping)):
            raise ConfigurationError("secret must be a string, bytes or a mapping of key id to secret")
        out["secret"] = secret
        out["heartbeat_ttl"] = _number(
            "heartbeat_ttl", values["heartbeat_ttl"], interval, f"heartbeat_interval={interval:g}"
        )
        if resolve:
            explicit = {f: (f, out[f]) for f in _SERVER_FIELDS if out[f] is not None}
            address = _resolve((explicit, *ambient))
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
        resolve = any(field in changes for field in _SERVER_FIELDS)
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
        return self._describe(signed=self.secret is not None or self._secret_in_env)

    def _describe(self, signed: bool) -> str:
        """The repr, with ``secret='*****'`` if ``signed`` (messages are signed, by whatever secret), else None."""
        parts = []
        for f in dataclasses.fields(self):
            if f.name in ("port", "password", "username", "url", *_TLS_FIELDS, "address") or f.name.startswith("_"):
                continue
            if f.name == "host":  # the server settings are shown once, as the address with a masked password
                shown = None if self.address is None else self.address.to_url()
                parts.append(f"address={shown!r}")
            elif f.name == "secret":
                parts.append(f"secret={'*****' if signed else None!r}")
            else:
                parts.append(f"{f.name}={getattr(self, f.name)!r}")
        return f"Settings({', '.join(parts)})"


# read by Settings itself, with the environment's precedence (server settings), or never from a config file
_NOT_FROM_CONFIG = (*_SERVER_FIELDS, "secret", "environ")


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
    for field in dataclasses.fields(Settings):
        name = field.name
        if not field.init or name in out or name in _NOT_FROM_CONFIG or (name == "workers" and given_workers):
            continue
        value = dask.config.get(f"redisparam.{name}", None)
        default = _DEFAULTS.get(name, inspect.Parameter.empty)
        if isinstance(value, list):  # YAML has no tuples
            value = tuple(value)
        if value is not None and value != default:
            out[name] = value
    return out


_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(Settings.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}

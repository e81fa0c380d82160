"""Which Redis server a :class:`~dask_redisparam.settings.Settings` uses: its sources and how they combine.

See the module documentation of :mod:`dask_redisparam.settings` for the precedence of the sources.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import dask.config

from ..errors import ConfigurationError
from .address import RedisAddress, parse_port

_TLS_FIELDS = ("tls_ca_file", "tls_cert_file", "tls_key_file")
_SERVER_FIELDS = ("host", "port", "password", "username", "url", *_TLS_FIELDS)
# the settings that resolve each on its own (see the module doc) -> the RedisAddress field they set
_CREDENTIALS = {
    "password": "password",
    "username": "username",
    "tls_ca_file": "ca_file",
    "tls_cert_file": "cert_file",
    "tls_key_file": "key_file",
}
# the RedisAddress field -> the URL query parameter that sets it
_URL_FILES = {"ca_file": "ssl_ca_certs", "cert_file": "ssl_certfile", "key_file": "ssl_keyfile"}
_LOCATION = ("url", "host", "port")

# A source of server settings: field name -> (name of the argument/variable/key, raw value).
_Layer = Mapping[str, tuple[str, Any]]


def _text(source: str, value: object, secret: bool = False) -> str:
    if not isinstance(value, str) or not value:
        shown = "" if secret else f"={value!r}"
        raise ConfigurationError(f"{source}{shown} must be a non-empty string")
    return value


def _file(source: str, value: object) -> str:
    """``value`` as the path of an existing readable file, or raise :class:`ConfigurationError` naming ``source``."""
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"{source}={value!r} must be a file path (str or os.PathLike)")
    if not os.path.isfile(path):
        raise ConfigurationError(f"{source}={path!r} is not an existing file")
    if not os.access(path, os.R_OK):
        raise ConfigurationError(f"{source}={path!r} is not a readable file")
    return path


def _credential(field: str, source: str, value: object) -> str:
    """A validated credential or TLS file setting (``field``) read from ``source``."""
    if field in _TLS_FIELDS:
        return _file(source, value)
    return _text(source, value, secret=field == "password")


def _layer_address(layer: _Layer) -> RedisAddress:
    """The address that a source naming a location gives, before overrides from higher sources."""
    address = RedisAddress()
    if "url" in layer:
        source, raw = layer["url"]
        try:
            address = RedisAddress.from_url(raw)
        except ConfigurationError as exc:
            if source == "url":
                raise
            raise ConfigurationError(f"{source}: {exc}") from None
        for field, name in _URL_FILES.items():
            if getattr(address, field) is not None:
                _file(f"{source} {name}", getattr(address, field))
    changes: dict[str, Any] = {}
    if "host" in layer:
        changes["host"] = _text(layer["host"][0], layer["host"][1])
    if "port" in layer:
        changes["port"] = parse_port(layer["port"][1], layer["port"][0])
    if changes:
        changes["path"] = None  # an explicit host or port replaces a Unix socket from the url
    for field, target in _CREDENTIALS.items():
        if field in layer:
            changes[target] = _credential(field, *layer[field])
    return dataclasses.replace(address, **changes)


def _resolve(layers: tuple[_Layer, ...]) -> RedisAddress | None:
    """Resolve the server from sources ordered from highest to lowest precedence (see the module doc)."""
    for index, layer in enumerate(layers):
        if any(field in layer for field in _LOCATION):
            address = _layer_address(layer)
            overrides: dict[str, Any] = {}
            # a credential comes from the highest source that sets one, as R resolves each field on its own:
            # e.g. ``--host h`` with REDISPARAM_PASSWORD in the environment (a Kubernetes secret) logs in
            for other in reversed(layers[index + 1 :]):
                for field, target in _CREDENTIALS.items():
                    if field in other and getattr(address, target) is None:
                        overrides[target] = _credential(field, *other[field])
            for above in reversed(layers[:index]):
                for field, target in _CREDENTIALS.items():
                    if field in above:
                        overrides[target] = _credential(field, *above[field])
            address = dataclasses.replace(address, **overrides)
            if (address.cert_file is None) != (address.key_file is None):
                given, missing = ("tls_cert_file", "tls_key_file")
                if address.cert_file is None:
                    given, missing = missing, given
                raise ConfigurationError(
                    f"{given} given without {missing}: a TLS client certificate needs its private key (in a URL:"
                    " ssl_certfile and ssl_keyfile)"
                )
            return address
    for layer in layers:
        for field in (f for f in _CREDENTIALS if f in layer):
            raise ConfigurationError(f"{field} given ({layer[field][0]}) but no Redis server (host, port or url)")
    return None


def _ambient_layers(environ: Mapping[str, str]) -> tuple[_Layer, ...]:
    """The sources below the arguments: ``REDISPARAM_URL``, the other variables, then dask config."""
    env_url: _Layer = {"url": ("REDISPARAM_URL", environ["REDISPARAM_URL"])} if environ.get("REDISPARAM_URL") else {}
    env_fields: dict[str, tuple[str, Any]] = {}
    for field in ("host", "port", "password", "username"):
        for name in (f"REDISPARAM_{field.upper()}", f"REDIS_{field.upper()}"):
            if environ.get(name):
                env_fields[field] = (name, environ[name])
                break
    for field in _TLS_FIELDS:  # no REDIS_TLS_* fallback
        if environ.get(name := f"REDISPARAM_{field.upper()}"):
            env_fields[field] = (name, environ[name])
    config: dict[str, tuple[str, Any]] = {}
    for field in _SERVER_FIELDS:
        value = dask.config.get(f"redisparam.{field}", None)
        if value is not None and value != "":
            config[field] = (f"redisparam.{field}", value)
    config_url = {"url": config.pop("url")} if "url" in config else {}
    return env_url, env_fields, config_url, config

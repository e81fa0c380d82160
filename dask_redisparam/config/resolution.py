"""Which Redis server a :class:`~dask_redisparam.config.settings.Settings` uses: its sources and how they combine.

See the module documentation of :mod:`dask_redisparam.config.settings` for the precedence of the sources.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import dask.config

from ..errors import ConfigurationError
from .address import RedisAddress, parse_port
from .checks import credential, file_path, text
from .schema import SERVER_FIELDS, setting

__all__ = ["Layer", "ambient_layers", "resolve_address"]

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

Layer = Mapping[str, tuple[str, Any]]
"""A source of server settings: field name -> (name of the argument/variable/key, raw value)."""


def _layer_address(layer: Layer) -> RedisAddress:
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
                file_path(f"{source} {name}", getattr(address, field))
    changes: dict[str, Any] = {}
    if "host" in layer:
        changes["host"] = text(layer["host"][0], layer["host"][1])
    if "port" in layer:
        changes["port"] = parse_port(layer["port"][1], layer["port"][0])
    if changes:
        changes["path"] = None  # an explicit host or port replaces a Unix socket from the url
    for field, target in _CREDENTIALS.items():
        if field in layer:
            changes[target] = credential(field, *layer[field])
    return dataclasses.replace(address, **changes)


def resolve_address(layers: tuple[Layer, ...]) -> RedisAddress | None:
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
                        overrides[target] = credential(field, *other[field])
            for above in reversed(layers[:index]):
                for field, target in _CREDENTIALS.items():
                    if field in above:
                        overrides[target] = credential(field, *above[field])
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


def ambient_layers(environ: Mapping[str, str]) -> tuple[Layer, ...]:
    """The sources below the arguments: ``REDISPARAM_URL``, the other variables (the ``env`` of each server
    setting in :data:`~dask_redisparam.config.schema.SETTINGS`), then dask config."""
    (url_variable,) = setting("url").env
    env_url: Layer = {"url": (url_variable, environ[url_variable])} if environ.get(url_variable) else {}
    env_fields: dict[str, tuple[str, Any]] = {}
    for field in (f for f in SERVER_FIELDS if f != "url"):  # the url's variable is a layer of its own, above
        for name in setting(field).env:  # the first one set wins
            if environ.get(name):
                env_fields[field] = (name, environ[name])
                break
    config: dict[str, tuple[str, Any]] = {}
    for field in SERVER_FIELDS:
        value = dask.config.get(f"redisparam.{field}", None)
        if value is not None and value != "":
            config[field] = (f"redisparam.{field}", value)
    config_url = {"url": config.pop("url")} if "url" in config else {}
    return env_url, env_fields, config_url, config

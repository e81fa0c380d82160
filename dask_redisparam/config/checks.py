"""The checks of single setting values, as the settings table (:mod:`dask_redisparam.config.schema`) uses them.

Each check (a :data:`Check`) takes the setting's name, the value and the settings validated before it, and returns
the value normalised (``5`` as ``5.0`` for a float setting, a path as ``str``), or raises
:class:`~dask_redisparam.errors.ConfigurationError` naming the setting and showing the value (never a password).

Examples
--------
>>> above_zero("timeout", 5, {})
5.0
>>> integer(1)("workers", 0, {})
Traceback (most recent call last):
...
dask_redisparam.errors.ConfigurationError: workers=0 must be a positive integer
"""

from __future__ import annotations

import math
import numbers
import os
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError
from .names import validate_name

__all__ = [
    "THRESHOLDS",
    "Check",
    "above_zero",
    "boolean",
    "credential",
    "credential_setting",
    "directory",
    "env_names",
    "file_path",
    "heartbeat_ttl",
    "integer",
    "is_worker",
    "jobname",
    "logdir",
    "optional",
    "redo_ttl",
    "resources",
    "secret",
    "state_dir",
    "text",
    "threshold",
    "url",
]

#: Log thresholds, as BiocParallel's, and the Python logging level of each.
THRESHOLDS: Mapping[str, int] = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}

Check = Callable[[str, Any, Mapping[str, Any]], Any]
"""``check(name, value, earlier)``: the validated value, or raise :class:`ConfigurationError`; ``earlier`` holds
the settings validated before this one (in table order)."""


def text(source: str, value: object, secret: bool = False) -> str:
    """``value`` as a non-empty string, or raise naming ``source`` (and not showing a ``secret`` value)."""
    if not isinstance(value, str) or not value:
        shown = "" if secret else f"={value!r}"
        raise ConfigurationError(f"{source}{shown} must be a non-empty string")
    return value


def file_path(source: str, value: object) -> str:
    """``value`` as the path of an existing readable file, or raise :class:`ConfigurationError` naming ``source``."""
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"{source}={value!r} must be a file path (str or os.PathLike)")
    if not os.path.isfile(path):
        raise ConfigurationError(f"{source}={path!r} is not an existing file")
    if not os.access(path, os.R_OK):
        raise ConfigurationError(f"{source}={path!r} is not a readable file")
    return path


def credential(field: str, source: str, value: object) -> str:
    """A validated credential or TLS file setting (``field``; the TLS ones are named ``tls_*``) read from ``source``."""
    if field.startswith("tls_"):
        return file_path(source, value)
    return text(source, value, secret=field == "password")


def optional(check: Check) -> Check:
    return lambda name, value, earlier: None if value is None else check(name, value, earlier)


def integer(minimum: int) -> Check:
    def check(name: str, value: Any, earlier: Mapping[str, Any]) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            kind = "a positive" if minimum == 1 else "a non-negative"
            raise ConfigurationError(f"{name}={value!r} must be {kind} integer")
        return int(value)

    return check


def _above(name: str, value: object, above: float = 0.0, bound: str = "0") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > above:
        raise ConfigurationError(f"{name}={value!r} must be a number > {bound}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name}={value!r} must be a finite number > {bound}")
    return float(value)


def above_zero(name: str, value: Any, earlier: Mapping[str, Any]) -> float:
    return _above(name, value)


def boolean(name: str, value: Any, earlier: Mapping[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name}={value!r} must be True or False")
    return value


def directory(name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
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


def state_dir(name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
    """A directory path (``~`` expanded, made absolute), which need not exist yet; None: the per-user default.

    Examples
    --------
    >>> state_dir("state_dir", "/srv/drp", {})
    '/srv/drp'
    """
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"{name}={value!r} must be None or a directory path (str or os.PathLike)")
    return os.path.abspath(os.path.expanduser(path))


def logdir(name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
    path = directory(name, value, earlier)
    if path is not None and not earlier["log"]:
        raise ConfigurationError(f"{name}={path!r} requires log=True")
    return path


def credential_setting(name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
    return None if value in (None, "") else credential(name, name, value)  # "" means unset, as in R


def jobname(name: str, value: Any, earlier: Mapping[str, Any]) -> str:
    try:
        return validate_name(uuid.uuid4().hex[:16] if value is None else value, name)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def is_worker(name: str, value: Any, earlier: Mapping[str, Any]) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{name}={value!r} must be None, True or False")
    return value


def url(name: str, value: Any, earlier: Mapping[str, Any]) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name}={value!r} must be a string")
    return value


def threshold(name: str, value: Any, earlier: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value.upper() not in THRESHOLDS:
        raise ConfigurationError(f"{name}={value!r} must be one of {', '.join(THRESHOLDS)}")
    return value.upper()


def heartbeat_ttl(name: str, value: Any, earlier: Mapping[str, Any]) -> float:
    interval = earlier["heartbeat_interval"]
    return _above(name, value, interval, f"heartbeat_interval={interval:g}")


def redo_ttl(name: str, value: Any, earlier: Mapping[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise ConfigurationError(f"{name}={value!r} must be a finite number >= 0 (seconds; 0: keep nothing)")
    return float(value)


def env_names(name: str, value: Any, earlier: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(n, str) and n and "=" not in n for n in value):
        raise ConfigurationError(f"{name}={value!r} must be a list of environment variable names")
    return tuple(value)


def secret(name: str, value: Any, earlier: Mapping[str, Any]) -> Any:
    if value is not None and not isinstance(value, (str, bytes, Mapping)):
        raise ConfigurationError(f"{name} must be a string, bytes or a mapping of key id to secret")
    return value


_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")


def resources(name: str, value: Any, earlier: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """Worker resources as ``((name, amount), ...)`` sorted by name (hashable, as the settings are), from a
    mapping, ``"GPU=2,MEM=64e9"`` or pairs; ``dict()`` of it is the mapping.

    Examples
    --------
    >>> resources("resources", "MEM=64e9, GPU=2", {})
    (('GPU', 2.0), ('MEM', 64000000000.0))
    >>> resources("resources", None, {})
    ()
    >>> resources("resources", {"GPU": 0}, {})
    Traceback (most recent call last):
    ...
    dask_redisparam.errors.ConfigurationError: resources: GPU=0 must be a finite number > 0
    """
    if value is None:
        return ()
    items: list[tuple[object, object]]
    if isinstance(value, str):
        items = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            lhs, eq, rhs = part.partition("=")
            if not eq:
                raise ConfigurationError(f"{name}={value!r}: {part!r} is not NAME=AMOUNT (e.g. GPU=2,MEM=64e9)")
            try:
                items.append((lhs.strip(), float(rhs)))
            except ValueError:
                raise ConfigurationError(f"{name}={value!r}: the amount of {lhs.strip()!r} is not a number") from None
    elif isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list)) and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value):
        items = [(p[0], p[1]) for p in value]
    else:
        raise ConfigurationError(f"{name}={value!r} must be a mapping or a string like 'GPU=2,MEM=64e9'")
    out: dict[str, float] = {}
    for label, amount in items:
        if not isinstance(label, str) or not _RESOURCE_NAME.match(label):
            raise ConfigurationError(
                f"{name}: resource name {label!r} must be a letter or _ then letters, digits, _ . - (at most 64)"
            )
        if (
            isinstance(amount, bool)
            or not isinstance(amount, numbers.Real)
            or not math.isfinite(float(amount))
            or not float(amount) > 0
        ):
            raise ConfigurationError(f"{name}: {label}={amount!r} must be a finite number > 0")
        if label in out:
            raise ConfigurationError(f"{name}: resource {label!r} given twice")
        out[label] = float(amount)
    return tuple(sorted(out.items()))

"""The packaged defaults of the ``redisparam.*`` dask config keys (``redisparam.yaml``), and their registration.

Importing :mod:`dask_redisparam` calls :func:`register_dask_defaults`, so ``dask.config.get("redisparam.<key>")``
works at once; values set before, in a dask config file or a ``DASK_REDISPARAM__<KEY>`` variable, win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config

__all__ = ["CONFIG_FILE", "config_defaults", "register_dask_defaults"]

CONFIG_FILE = Path(__file__).with_name("redisparam.yaml")
"""The packaged defaults of the ``redisparam.*`` dask config keys."""


def config_defaults() -> dict[str, Any]:
    """The packaged defaults of the dask config keys, ``{"redisparam": {...}}``, read from ``redisparam.yaml``.

    Examples
    --------
    >>> config_defaults()["redisparam"]["queue_multiplier"]
    2.0
    """
    loaded: dict[str, Any] = {}
    for part in dask.config.collect_yaml([str(CONFIG_FILE)]):
        dask.config.update(loaded, part)
    return loaded


def register_dask_defaults() -> None:
    """Register the packaged defaults with :func:`dask.config.update_defaults` (once; later calls do nothing).

    Values set before, by a dask config file or a ``DASK_REDISPARAM__<KEY>`` environment variable, win.

    Examples
    --------
    >>> register_dask_defaults()
    >>> dask.config.get("redisparam.heartbeat_ttl")
    10.0
    """
    defaults = config_defaults()
    if any(entry.get("redisparam") == defaults["redisparam"] for entry in dask.config.defaults):
        return
    dask.config.update_defaults(defaults)

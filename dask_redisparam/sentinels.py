"""The package's sentinels: stand-ins for "no value" that no real value can be mistaken for.

It imports nothing of the package, so that every layer may use it (errors, wire, backend, manager, worker).

Examples
--------
>>> MISSING, FROM_ENVIRONMENT
(<MISSING>, <FROM_ENVIRONMENT>)
>>> import pickle
>>> pickle.loads(pickle.dumps(MISSING)) is MISSING
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["FROM_ENVIRONMENT", "MISSING", "Sentinel"]


class Sentinel:
    """A unique named object, compared with ``is``; it pickles as a reference to itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def __reduce__(self) -> str:
        return self.name


MISSING: Any = Sentinel("MISSING")
"""No value: an argument not given (``iterate(init=...)``, ``map(tasks=...)``), a key not in a dict, a stored value
or a part of one gone from Redis (:func:`~dask_redisparam.wire.bulk.open_values`)."""

FROM_ENVIRONMENT: Any = Sentinel("FROM_ENVIRONMENT")
"""An argument to take from the environment when not given (a worker's signer: ``REDISPARAM_SECRET``)."""

"""R's names: RedisParam's ``rp*`` functions and BiocParallel's ``bpstopall``, for the Python ones.

These work on any :class:`~dask_redisparam.RedisParam`, started or not (an unstarted one opens a temporary
connection).

=================  ====================================================================
R (RedisParam)     Python
=================  ====================================================================
``rpalive(p)``     :func:`rpalive` / ``p.alive()``
``rpstopall(p)``   :func:`rpstopall` / ``p.stop_all()``
``rpworkers(x)``   :func:`rpworkers`: default worker count for an ``is_worker`` value
``rphost(p)``      :func:`rphost`; also ``rpport``, ``rppassword``, ``rpisworker``
``bpstopall(p)``   :func:`bpstopall`, deprecated as in R
=================  ====================================================================
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from .config.address import RedisAddress
from .config.settings import default_worker_count
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .param import RedisParam

__all__ = ["bpstopall", "rpalive", "rphost", "rpisworker", "rppassword", "rpport", "rpstopall", "rpworkers"]


def rpalive(param: RedisParam) -> bool:
    """R's ``rpalive``: whether the param's Redis server answers."""
    return param.alive()


def rpstopall(param: RedisParam) -> int:
    """R's ``rpstopall``: stop every worker listening on the param's jobname."""
    return param.stop_all()


def bpstopall(param: RedisParam) -> int:
    """Deprecated alias of :func:`rpstopall`, as in R."""
    warnings.warn("bpstopall() is deprecated; use rpstopall()", DeprecationWarning, stacklevel=2)
    return rpstopall(param)


def rpworkers(is_worker: bool | None) -> int:
    """R's ``rpworkers``: the default worker count: local CPUs for None, 1000 (a cap) for False, 1 for True."""
    if is_worker is None:
        return default_worker_count()
    if not isinstance(is_worker, bool):
        raise ConfigurationError(f"is_worker={is_worker!r} must be None, True or False")
    return 1 if is_worker else 1000


def _address(param: RedisParam) -> RedisAddress | None:
    return param.backend.address if param.is_up else param.settings.address


def rphost(param: RedisParam) -> str | None:
    """R's ``rphost``: the server's host (None for the embedded server, which has a socket path)."""
    address = _address(param)
    return None if address is None or address.path is not None else address.host


def rpport(param: RedisParam) -> int | None:
    """R's ``rpport``: the server's TCP port (None when on a Unix socket or not configured)."""
    address = _address(param)
    return None if address is None or address.path is not None else address.port


def rppassword(param: RedisParam) -> str | None:
    """R's ``rppassword``: the password in use, or None."""
    address = _address(param)
    return None if address is None else address.password


def rpisworker(param: RedisParam) -> bool | None:
    """R's ``rpisworker``: the param's ``is_worker`` mode."""
    return param.settings.is_worker

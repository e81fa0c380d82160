"""R's ``bptry`` and ``bpok``: computing with exceptions in place of failed results, and telling them apart.

Examples
--------
>>> is_ok([1.0, ValueError("no"), 3.0])
[True, False, True]
"""

from __future__ import annotations

from typing import Any

from dask.base import compute

__all__ = ["is_ok", "try_compute"]


def try_compute(*collections: Any, scheduler: Any, **kwargs: Any) -> tuple[Any, ...]:
    """``dask.compute`` that returns exceptions in place of failed or unevaluated outputs instead of raising.

    Outputs whose task failed hold its exception (original type, also a ``RemoteError``); outputs that depend
    on a failed task hold an :class:`~dask_redisparam.errors.Unevaluated`. Use :func:`is_ok` to tell them apart.
    ``scheduler`` must be a :class:`~dask_redisparam.RedisParam` (or :func:`~dask_redisparam.redis_get`).
    """
    computed = compute(*collections, scheduler=scheduler, return_exceptions=True, **kwargs)  # type: ignore[no-untyped-call]
    return tuple(computed)


def is_ok(x: Any) -> Any:
    """R's ``bpok``: False for an exception, True otherwise; element-wise for a list or tuple."""
    if isinstance(x, (list, tuple)):
        return [not isinstance(v, BaseException) for v in x]
    return not isinstance(x, BaseException)

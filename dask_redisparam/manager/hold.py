"""Ending a run without downloading: its requested values stay in Redis (``persist``, ``publish``).

:func:`keep_values` makes the end of a run for :func:`~dask_redisparam.manager.loop.run_graph` (its ``finish``):
instead of downloading the requested values, the run's data hash is trimmed to them (and the parts of the large
ones) and renamed, O(1), to a key of the caller's (:meth:`Backend.hold_values
<dask_redisparam.backend.held.HeldOps.hold_values>`). The run returns, for each requested key, a :class:`Kept`
(field and size) or, for a small literal that never went to Redis, the value itself. A run that failed ends as
usual (its values are downloaded for the partial results, and the error raised).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

from ..backend import Backend
from ..errors import HeldValuesLost
from .state import RunState

__all__ = ["Finish", "Kept", "keep_values"]

Finish = Callable[[Backend, RunState], dict[Hashable, Any]]
"""The end of a run: the values it returns, by requested key (the default downloads them)."""


@dataclasses.dataclass(frozen=True)
class Kept:
    """A requested value that stayed in Redis: its field in the holding hash (the same as in its run), its size in
    bytes, and the run that computed it (its worker may still have it in memory under that run and field).

    Examples
    --------
    >>> Kept(3, 800, "r1")
    Kept(field=3, nbytes=800, run_id='r1')
    """

    field: int
    nbytes: int
    run_id: str = ""


def keep_values(target: str, ttl: float | None, download: Finish) -> Finish:
    """The end of a run that keeps its requested values under ``target`` for ``ttl`` seconds (None: no TTL);
    ``download`` ends a failed run as usual."""

    def finish(backend: Backend, run: RunState) -> dict[Hashable, Any]:
        if run.errors:
            return download(backend, run)
        out, remote, fields = run.locate(run.result_keys())
        if not remote:
            return out
        wanted = list(dict.fromkeys(fields))  # aliases share a field
        names = wanted + [part for field in wanted for part in run.parts.get(int(field), ())]
        found = backend.hold_values(run.job, run.run_id, names, target, ttl)
        if found < len(names):
            raise HeldValuesLost(
                f"{len(names) - max(found, 0)} of the {len(names)} values and parts to keep of run {run.run_id} of job "
                f"{run.job!r} are missing from Redis at {run.options.describe_server}: was the server restarted "
                "without persistence, or the key evicted?"
            )
        for key, field in zip(remote, fields, strict=True):
            stored = run.state["cache"].get(key)
            out[key] = Kept(int(field), stored.nbytes if stored is not None else 0, run.run_id)
        return out

    return finish

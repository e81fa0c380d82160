"""The manager's state machine for one run (one call of a ``get``): :class:`RunState`.

It does no I/O: it takes *events* and hands out *commands*, which :mod:`dask_redisparam.manager` carries out
against Redis. It is built from these parts, one module each:

:mod:`dask_redisparam.manager.run_core`
    the state dict (documented there, with the life of a task), setting up a run, the shared transitions;
:mod:`dask_redisparam.manager.run_dispatch`
    ready tasks into messages, within the window;
:mod:`dask_redisparam.manager.run_events`
    what the loop reports: completion records, loss and rejection notices, live workers, withdrawn messages;
:mod:`dask_redisparam.manager.run_futures`
    tasks held for futures and released one by one, and withdrawing a task that has not left the manager;
:mod:`dask_redisparam.manager.run_recovery`
    running, pushing and uploading again what a failover lost (:mod:`dask_redisparam.manager.failover`).

This module joins them and adds the end of a run: where the values are, and what the run returns.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import Unevaluated, raise_partial
from .options import RedoInfo
from .run_core import INLINE_BYTES
from .run_dispatch import TARGET_SECONDS, Dispatch
from .run_events import Events
from .run_futures import Futures
from .run_recovery import Recovery

__all__ = ["INLINE_BYTES", "TARGET_SECONDS", "RunState"]


class RunState(Dispatch, Events, Futures, Recovery):
    """The state of one run and its transitions: dispatch, events, futures and the end of the run.

    Parameters
    ----------
    graph : Graph
        From :func:`dask_redisparam.manager.graph.prepare_graph`.
    options : RunOptions
        The run's settings.
    callbacks : sequence
        dask callbacks (``Callback`` objects or 5-tuples), called on the transitions as ``dask.local`` does.
    clock : callable, optional
        Monotonic seconds, for the rejection policy (default :func:`time.monotonic`).
    run_id : str, optional
        Default: a fresh random one.

    Examples
    --------
    >>> from dask_redisparam.manager.graph import prepare_graph
    >>> from dask_redisparam.manager.options import RunOptions
    >>> from dask_redisparam.config.settings import Settings
    >>> options = RunOptions.from_settings(Settings(jobname="job", environ={}))
    >>> run = RunState(prepare_graph({"x": 1, "y": (abs, "x")}, ["y"]), options, [])
    >>> run.start({})
    ({}, [], {})
    >>> run.set_workers(1)
    >>> commands = run.take_commands()
    >>> len(commands.push), sorted(run.state["running"])
    (1, ['y'])
    """

    def redo_info(self) -> RedoInfo:
        """What a later ``redo=`` needs: the fields of every value still held (inputs of what failed)."""
        fields = {key: str(field) for key, field in self.loc.items() if field not in self.inline}
        parts = {str(field): names for field, names in self.parts.items()}
        return RedoInfo(self.job, self.run_id, fields, self.options.rng_seed, parts)

    def unevaluated(self) -> list[Hashable]:
        """Requested keys neither computed nor failed."""
        finished = self.state["finished"]
        return [k for k in self.graph.requested if k not in finished and k not in self.errors]

    def result_keys(self) -> list[Hashable]:
        """The requested keys whose values the caller gets at the end (those not streamed away)."""
        return [k for k in self.graph.requested if k in self.requested]

    def locate(self, keys: Iterable[Hashable]) -> tuple[dict[Hashable, Any], list[Hashable], list[str]]:
        """Where the values of finished ``keys`` are: ``(values held here, keys in Redis, their fields)``; keys
        without a value (failed, or saved on disk and needed by nothing) are left out."""
        here: dict[Hashable, Any] = {}
        remote: list[Hashable] = []
        for key in keys:
            field = self.loc.get(key)
            if field is None:
                continue
            if field in self.inline:
                here[key] = self.inline[field]
            else:
                remote.append(key)
        return here, remote, [str(self.loc[k]) for k in remote]

    def outcome(self, results: dict[Hashable, Any]) -> dict[Hashable, Any]:
        """What the run returns, given the downloaded ``results``: them, or, when tasks failed, exceptions in place
        (``return_exceptions``); else raise (:func:`~dask_redisparam.errors.raise_partial`)."""
        if not self.errors:
            return results
        options = self.options
        if options.return_exceptions:
            out = dict(results)
            for key in self.graph.requested:
                if key not in out:
                    out[key] = self.errors.get(key) or Unevaluated(key)
            return out
        redo = self.redo_info() if options.redo_ttl > 0 else None
        raise_partial(
            dict(self.errors), results, self.unevaluated(), redo, self.error if options.stop_on_error else None
        )

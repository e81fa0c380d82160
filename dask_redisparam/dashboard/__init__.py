"""The dashboard: a live web page of a Redis server's jobs, and their Prometheus metrics.

``dask-redisparam dashboard`` (:mod:`dask_redisparam.cli.dashboard`) or ``RedisParam(dashboard=True)`` start a
:class:`~.app.Dashboard`: the page (:mod:`.app`, drawn from :func:`~.view.job_view`) and ``/metrics``
(:mod:`.metrics`). It only reads Redis (:mod:`dask_redisparam.backend.monitor`); the counters are kept there by
the completion script, the reaper and the manager (:mod:`dask_redisparam.backend.stats`).
"""

from __future__ import annotations

from .app import DEFAULT_ADDRESS, Dashboard

__all__ = ["DEFAULT_ADDRESS", "Dashboard"]

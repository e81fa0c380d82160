"""``/metrics``: the jobs of a server in Prometheus's text format (``prometheus_client``).

The counters are not counted here: they live in Redis, where the facts happen (the completion script counts tasks
finished and failed and their durations, the reaper the messages lost with their workers, the manager the tasks it
retries; :mod:`dask_redisparam.backend.stats`). So they are exact, and a restarted dashboard goes on from the same
values. The gauges (queue, workers, bytes, dead letters) are read at each scrape.

========================================  =========  ===============  =================================================
metric                                    type       labels           meaning
========================================  =========  ===============  =================================================
``redisparam_tasks_finished_total``       counter    job              tasks that ran to a result
``redisparam_tasks_failed_total``         counter    job              tasks that raised (each run of a retried task)
``redisparam_messages_lost_total``        counter    job              messages requeued from a dead worker
``redisparam_tasks_retried_total``        counter    job              tasks sent again after raising (``retries``)
``redisparam_task_duration_seconds``      histogram  job, prefix      task run times, by task key prefix (capped)
``redisparam_queue_length``               gauge      job              messages waiting in the job's queue
``redisparam_workers``                    gauge      job              live workers
``redisparam_runs``                       gauge      job              runs whose manager is alive
``redisparam_stored_bytes``               gauge      job              bytes the job's values hold in Redis (sampled)
``redisparam_dead_letters``               gauge      job              messages in the dead-letter list
========================================  =========  ===============  =================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from ..backend.monitor import JobLook
from ..backend.stats import BUCKETS

__all__ = ["JobsCollector", "exposition"]


class JobsCollector(Collector):
    """A Prometheus collector over the looks that ``looks()`` takes at each scrape."""

    def __init__(self, looks: Callable[[], Sequence[JobLook]]) -> None:
        self._looks = looks

    def collect(self) -> Iterator[Metric]:
        looks = self._looks()
        counters: dict[str, tuple[str, Callable[[JobLook], float]]] = {
            "tasks_finished": ("Tasks that ran to a result.", lambda j: j.metrics.finished),
            "tasks_failed": ("Tasks that raised (each run of a retried task).", lambda j: j.metrics.failed),
            "messages_lost": ("Task messages requeued from a worker that died.", lambda j: j.metrics.lost),
            "tasks_retried": ("Tasks sent again after raising (retries).", lambda j: j.metrics.retried),
        }
        for name, (doc, value) in counters.items():
            family = CounterMetricFamily(f"redisparam_{name}", doc, labels=["job"])
            for look in looks:
                family.add_metric([look.jobname], value(look))
            yield family
        histogram = HistogramMetricFamily(
            "redisparam_task_duration_seconds", "Task run times by task key prefix.", labels=["job", "prefix"]
        )
        bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
        for look in looks:
            for prefix, p in sorted(look.metrics.prefixes.items()):
                histogram.add_metric(
                    [look.jobname, prefix], list(zip(bounds, (float(n) for n in p.buckets), strict=True)), p.seconds
                )
        yield histogram
        gauges: dict[str, tuple[str, Callable[[JobLook], float]]] = {
            "queue_length": ("Task messages waiting in the job's queue.", lambda j: j.queued),
            "workers": ("Live workers of the job.", lambda j: len(j.workers)),
            "runs": ("Runs of the job whose manager is alive.", lambda j: sum(r.alive for r in j.runs)),
            "stored_bytes": ("Bytes the job's values hold in Redis (sampled).", lambda j: j.nbytes),
            "dead_letters": ("Task messages in the job's dead-letter list.", lambda j: j.dead_letters),
        }
        for name, (doc, value) in gauges.items():
            gauge = GaugeMetricFamily(f"redisparam_{name}", doc, labels=["job"])
            for look in looks:
                gauge.add_metric([look.jobname], value(look))
            yield gauge


def exposition(looks: Callable[[], Sequence[JobLook]]) -> bytes:
    """The text format of one scrape.

    Examples
    --------
    >>> from dask_redisparam.backend.monitor import JobLook
    >>> from dask_redisparam.backend.stats import parse_metrics
    >>> look = JobLook("demo", {}, 0, 2, 0, {}, parse_metrics({"finished|inc": "5", "b0|inc": "5"}), [], [], 0, 0.0)
    >>> text = exposition(lambda: [look]).decode()
    >>> 'redisparam_tasks_finished_total{job="demo"} 5.0' in text
    True
    >>> 'redisparam_task_duration_seconds_bucket{job="demo",le="0.001",prefix="inc"} 5.0' in text
    True
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(looks))
    return generate_latest(registry)

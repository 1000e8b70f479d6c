"""Prometheus export of the counters, summed over every process.

Optional (``pip install prometheus-client``)::

    # urls.py
    from django_dogpile.prometheus import metrics_view
    urlpatterns += [path("metrics/dogpile", metrics_view)]

or register :class:`DogpileCollector` on a registry you already export.
Each DogpileCache alias gives

* ``django_dogpile_events_total{alias,event}``, a counter (``event`` is one
  of :data:`~django_dogpile.stats.COUNTERS`): summed over every process,
  those that exited included, so it never goes down when a worker exits or
  is killed -- only when the store itself loses the counters (``clear()``,
  an eviction), which Prometheus takes as a counter reset;
* ``django_dogpile_processes{alias}``, a gauge: the serving processes
  (those that counted an event) whose record is live.

The numbers are those of ``manage.py dogpile stats``: every worker
publishes its counters into the store (``DOGPILE["STATS_INTERVAL"]``), so
any one worker answers for all of them -- no ``prometheus_client``
multiprocess directory is needed under gunicorn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse

from django_dogpile.conf import dogpile_aliases
from django_dogpile.engine.shared_stats import publish_now, shared_stats
from django_dogpile.stats import COUNTERS

__all__ = ["DogpileCollector", "metrics_view"]


class DogpileCollector:
    """A ``prometheus_client`` collector for every DogpileCache alias."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        events = CounterMetricFamily(
            "django_dogpile_events",
            "DogpileCache outcomes (nginx's words) and events, summed over processes",
            labels=["alias", "event"],
        )
        processes = GaugeMetricFamily(
            "django_dogpile_processes",
            "Serving processes whose counters are live in the store",
            labels=["alias"],
        )
        publish_now()
        for alias in dogpile_aliases():
            try:
                data = shared_stats(alias)
            except Exception:  # a store that is down: no sample, no error page
                continue
            for name in COUNTERS:
                events.add_metric([alias, name], data["total"][name])
            processes.add_metric([alias], len(data["processes"]))
        yield events
        yield processes


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the counters in Prometheus's text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(DogpileCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

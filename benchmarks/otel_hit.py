"""The fresh hit with OpenTelemetry on against off, side by side in one run.

``DOGPILE["OPENTELEMETRY"]`` connects receivers to the backend's signals,
which a fresh hit never sends: this measures that the hit costs what it
costs without it.  The SDK's tracer and meter providers are configured (a
batch span processor over an in-memory exporter, an in-memory metric
reader), and ``get_or_set`` of a 4 KB fresh value is timed on locmem and
on Redis, off and on in 15 interleaved rounds; the medians are printed and
the ratio is the median of the rounds' ratios (the machines are shared and
noisy).  The issue's bar: at most 1.05x.

Run: .venv/bin/python benchmarks/otel_hit.py   (starts its own redis-server; ~20 s)
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.helpers.redis_server import RedisServer

ROUNDS, N = 15, 20000


def main() -> None:
    server = RedisServer()
    server.start()
    os.environ["DOGPILE_TEST_REDIS_URL"] = server.url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    try:
        import django

        django.setup()
        from django.core.cache import caches
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from django_dogpile import otel

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        value = "<li>row</li>" * 340
        print(f"{'store':7} {'off µs':>8} {'on µs':>8} {'on/off':>7}")
        for alias in ("dp_locmem", "dp_redis"):
            cache = caches[alias]
            cache.set("bench:otel", value)
            n = N if alias == "dp_locmem" else N // 10
            off, on, ratios = [], [], []
            for _ in range(ROUNDS):
                otel.disable()
                a = min(timeit.repeat(lambda: cache.get_or_set("bench:otel", "x"), number=n, repeat=3)) / n  # noqa: B023
                otel.enable()
                b = min(timeit.repeat(lambda: cache.get_or_set("bench:otel", "x"), number=n, repeat=3)) / n  # noqa: B023
                off.append(a)
                on.append(b)
                ratios.append(b / a)
            otel.disable()
            print(
                f"{alias:7} {statistics.median(off) * 1e6:>8.2f} {statistics.median(on) * 1e6:>8.2f} "
                f"{statistics.median(ratios):>7.3f}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

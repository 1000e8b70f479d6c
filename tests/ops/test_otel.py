"""OpenTelemetry (``DOGPILE["OPENTELEMETRY"]``), with the real SDK and its
in-memory exporters: a WSGI and an ASGI request through
``dogpile_cache_page`` that waits for a regeneration, the span of the
request that regenerates, their parents and attributes; no span for a
fresh hit; the counters as observable metrics."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.checks import run_checks
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils import translation

from django_dogpile import otel
from django_dogpile.decorators import dogpile_cache_page

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ENTERED, RELEASE = threading.Event(), threading.Event()
RUNS = []


@dogpile_cache_page(60, cache="dp_locmem")
def slow(request):
    RUNS.append(1)
    ENTERED.set()
    RELEASE.wait(10)
    return HttpResponse(f"page {len(RUNS)}")


urlpatterns = [path("slow/", slow)]

_SPANS = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def providers():
    """The SDK's providers, once per process (OpenTelemetry allows one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    yield


@pytest.fixture
def site():
    caches["dp_locmem"].clear()
    RUNS.clear()
    ENTERED.clear()
    RELEASE.clear()
    _SPANS.clear()
    # the language a request's thread starts with (a test before may have left
    # this thread in another, and the language is part of a page's key)
    with (
        override_settings(ROOT_URLCONF="tests.ops.test_otel", DOGPILE={"OPENTELEMETRY": True}),
        translation.override(settings.LANGUAGE_CODE),
    ):
        assert otel.enabled()
        yield
    assert not otel.enabled()  # the setting gone: the receivers too


def ours():
    return [s for s in _SPANS.get_finished_spans() if s.name.startswith("dogpile.")]


def _regenerating_request(results):
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request A") as span:
        results["A"] = (Client().get("/slow/"), span.get_span_context().span_id)


@pytest.mark.parametrize("face", ["wsgi", "asgi"])
def test_a_request_that_waits_and_the_one_that_regenerates(site, face):
    results = {}
    a = threading.Thread(target=_regenerating_request, args=(results,))
    a.start()
    assert ENTERED.wait(5)
    threading.Timer(0.3, RELEASE.set).start()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request B") as b_span:
        if face == "wsgi":
            b = Client().get("/slow/")
        else:
            b = asyncio.run(AsyncClient().get("/slow/"))
    a.join(10)
    a_response, a_id = results["A"]
    assert a_response.content == b.content == b"page 1" and len(RUNS) == 1, (a_response.headers, b.headers)
    spans = {s.name: s for s in ours()}
    assert set(spans) == {"dogpile.regenerate", "dogpile.wait"}, ours()
    made, waited = spans["dogpile.regenerate"], spans["dogpile.wait"]
    assert made.parent.span_id == a_id  # children of their requests' spans
    assert waited.parent.span_id == b_span.get_span_context().span_id
    assert made.attributes["dogpile.lease_held"] is True and waited.attributes["dogpile.lease_held"] is False
    assert made.attributes["dogpile.status"] == "MISS" and waited.attributes["dogpile.status"] == "MISS"
    assert made.attributes["dogpile.alias"] == "dp_locmem" and made.attributes["dogpile.store"] == "local"
    assert made.attributes["dogpile.creator.duration"] >= 0.25
    assert waited.attributes["dogpile.wait.duration"] >= 0.2
    assert (made.end_time - made.start_time) / 1e9 == pytest.approx(
        made.attributes["dogpile.creator.duration"], abs=0.01
    )
    assert "dogpile.key" not in made.attributes and len(made.attributes["dogpile.key.hash"]) == 16

    _SPANS.clear()
    assert Client().get("/slow/").content == b"page 1"  # a fresh hit
    assert ours() == []  # no span


def test_a_stale_page_adds_an_event_and_a_failure_is_an_error_span(site):
    from django_dogpile.testing import Clock

    cache = caches["dp_locmem"]
    tracer = trace.get_tracer("test")
    with Clock() as clock:
        cache.set("k", "old", 10)
        clock.advance(11)
        inside, release = threading.Event(), threading.Event()

        def slow_creator():
            inside.set()
            release.wait(5)
            return "new"

        t = threading.Thread(target=lambda: cache.get_or_set("k", slow_creator))
        t.start()
        assert inside.wait(5)
        with tracer.start_as_current_span("request") as span:
            assert cache.get_or_set("k", "never") == "old"
        release.set()
        t.join(5)
        assert [e.name for e in span.events] == ["dogpile.stale_served"]
        assert span.events[0].attributes["dogpile.reason"] == "UPDATING"

        def boom():
            raise RuntimeError("partner down")

        _SPANS.clear()
        with pytest.raises(RuntimeError):
            cache.get_or_set("cold", boom)
    (failed,) = ours()
    assert failed.name == "dogpile.regenerate" and failed.status.status_code.name == "ERROR"
    assert failed.events[0].name == "exception"


def test_keys_on_the_spans_only_when_asked(site):
    with override_settings(DOGPILE={"OPENTELEMETRY": {"KEYS": True}}):
        caches["dp_locmem"].get_or_set("visible", "v")
    (made,) = ours()
    assert made.attributes["dogpile.key"] == "visible"


def test_the_counters_are_observable_metrics(site):
    cache = caches["dp_locmem"]
    cache.get_or_set("m", "v")
    cache.get_or_set("m", "v")
    data = _READER.get_metrics_data()
    points = {
        (metric.name, tuple(sorted(p.attributes.items()))): getattr(p, "value", getattr(p, "count", None))
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for p in metric.data.data_points
        if "dogpile.alias" in p.attributes and p.attributes["dogpile.alias"] == "dp_locmem"
    }
    assert points[("dogpile.calls", (("dogpile.alias", "dp_locmem"), ("dogpile.status", "HIT")))] >= 1
    assert points[("dogpile.regenerations", (("dogpile.alias", "dp_locmem"),))] >= 1
    assert ("dogpile.regeneration.duration", (("dogpile.alias", "dp_locmem"),)) in points


def test_check_and_setting_validation():
    from django_dogpile.conf import ConfigError, parse_dogpile_setting

    with pytest.raises(ConfigError, match="OPENTELEMETRY"):
        parse_dogpile_setting({"OPENTELEMETRY": "yes"})
    with override_settings(DOGPILE={"OPENTELEMETRY": True}):
        assert not [e for e in run_checks() if e.id == "django_dogpile.E014"]  # installed here


def test_e014_when_the_package_is_missing(monkeypatch):
    monkeypatch.setattr(otel, "trace", None)  # as if opentelemetry-api were not installed
    with override_settings(DOGPILE={"OPENTELEMETRY": True}):
        found = otel.check_installed()
        assert not otel.enabled()  # nothing connected without it
    assert [e.id for e in found] == ["django_dogpile.E014"] and "otel" in found[0].hint

"""Draw the Observability page's two pictures into docs/_static/.

``trace.svg`` -- the spans of three requests for one key, from the
OpenTelemetry SDK's in-memory exporter: A makes the value (``dogpile.regenerate``),
B arrives while A makes it and waits (``dogpile.wait``), C is a fresh hit
(no span of ours).  ``toolbar-panel.png`` -- the Dogpile panel in headless
Chromium, taken by the browser test (tests/system/test_browser.py).

    .venv/bin/python docs/pictures.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "docs" / "_static"


def spans() -> list:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_dogpile"],
        CACHES={
            "store": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "default": {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "store"},
        },
        DOGPILE={"OPENTELEMETRY": True},
    )
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    django.setup()
    from django.core.cache import cache

    tracer = trace.get_tracer("site")

    def report() -> str:
        time.sleep(0.30)  # the slow query
        return "report"

    def request(name: str, delay: float) -> None:
        time.sleep(delay)
        with tracer.start_as_current_span(f"GET /report/ ({name})"):
            time.sleep(0.01)  # the request's own work
            cache.get_or_set("report", report, 60)
            time.sleep(0.01)

    threads = [threading.Thread(target=request, args=(n, d)) for n, d in (("A", 0), ("B", 0.08), ("C", 0.45))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return list(exporter.get_finished_spans())


def draw(found: list) -> str:
    """A waterfall: one row per span, children under their parent."""
    start = min(s.start_time for s in found)
    end = max(s.end_time for s in found)
    width, left, row, scale = 760, 200, 30, 520 / (end - start)
    parents = [s for s in found if s.parent is None]
    ordered = []
    for parent in sorted(parents, key=lambda s: s.start_time):
        ordered.append((0, parent))
        kids = [s for s in found if s.parent is not None and s.parent.span_id == parent.context.span_id]
        ordered += [(1, s) for s in sorted(kids, key=lambda s: s.start_time)]
    height = 40 + row * len(ordered) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        '<text x="10" y="20" font-weight="bold">Three requests for one key '
        "(OpenTelemetry, in-memory exporter)</text>",
    ]
    colours = {"dogpile.regenerate": "#d9534f", "dogpile.wait": "#f0ad4e"}
    for i, (depth, span) in enumerate(ordered):
        y = 40 + i * row
        x = left + (span.start_time - start) * scale
        w = max(2.0, (span.end_time - span.start_time) * scale)
        ms = (span.end_time - span.start_time) / 1e6
        name = span.name
        attrs = span.attributes or {}
        label = f"{name}"
        if name.startswith("dogpile."):
            label += f"  {attrs.get('dogpile.status', '')}, lease held: {attrs.get('dogpile.lease_held')}"
        out.append(f'<text x="{10 + depth * 16}" y="{y + 15}">{escape(name)}</text>')
        out.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="16" rx="2" '
            f'fill="{colours.get(name, "#5b8bd6")}"/>'
        )
        out.append(
            f'<text x="{x + w + 6:.1f}" y="{y + 15}" fill="#333">{ms:.0f} ms'
            f"{escape(label[len(name) :])}</text>"
        )
    axis = 40 + row * len(ordered) + 10
    total_ms = (end - start) / 1e6
    out.append(f'<line x1="{left}" y1="{axis}" x2="{left + 520}" y2="{axis}" stroke="#999"/>')
    for tick in range(0, int(total_ms) + 1, 100):
        x = left + tick * 1e6 * scale
        out.append(f'<text x="{x:.1f}" y="{axis + 14}" fill="#666" text-anchor="middle">{tick} ms</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    STATIC.mkdir(exist_ok=True)
    if "--no-trace" not in sys.argv:
        # a child process: Django is configured by hand for the trace
        code = "import docs.pictures as p; print(p.draw(p.spans()), end='')"
        svg = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (STATIC / "trace.svg").write_text(svg)
    env = dict(os.environ, DOGPILE_DOCS_SHOTS=str(STATIC))
    test = "tests/system/test_browser.py::test_toolbar_panel_shows_the_status_words"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT, env=env, check=True
    )
    print("drew", *sorted(p.name for p in STATIC.iterdir()))


if __name__ == "__main__":
    main()

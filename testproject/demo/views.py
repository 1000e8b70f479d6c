"""The demo: the same slow work behind every face, and a live stats page."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_page
from django.views.decorators.http import require_POST

from django_dogpile.decorators import cached, dogpile_cache_page
from django_dogpile.invalidation import invalidate_tags
from django_dogpile.stats import COUNTERS, get_key_stats, get_stats

from . import timeline

_lock = threading.Lock()
RUNS: dict[str, int] = defaultdict(int)  # face -> slow executions
LAST: dict[str, float] = {}


def _event(face: str, what: str) -> None:
    """One line per slow-work event in DEMO_RUNS_LOG (benchmarks/soak reads it).

    A single ``write`` to a file opened for appending is atomic for a line
    this short, so the worker processes of one server share the file.
    """
    path = settings.DEMO_RUNS_LOG
    if path:
        line = f"{time.time():.6f} {os.getpid()} {what} {face}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def slow_work(face: str) -> str:
    """The expensive part: counted, then it sleeps DEMO_SLOW seconds."""
    with _lock:
        RUNS[face] += 1
        n = RUNS[face]
    timeline.record(face)
    _event(face, "start")
    if settings.DEMO_FAIL_FILE and os.path.exists(settings.DEMO_FAIL_FILE):
        _event(face, "error")
        raise RuntimeError(f"{face}: failing on purpose ({settings.DEMO_FAIL_FILE} exists)")
    time.sleep(settings.DEMO_SLOW)
    LAST[face] = time.time()
    _event(face, "end")
    return f"{face} computed (run #{n}) at {time.strftime('%H:%M:%S')}"


def index(request):
    return render(request, "demo/index.html", {"timeout": settings.DEMO_TIMEOUT})


def _report(request, face):
    return HttpResponse(
        f"<!doctype html><title>report</title><h1>Report</h1><p id=result>{slow_work(face)}</p>"
        '<p><a href="/">back</a></p>'
    )


@dogpile_cache_page(None)
def report(request):
    return _report(request, "page (dogpile_cache_page)")


@cache_page(settings.DEMO_TIMEOUT, cache="plain")
def report_plain(request):
    return _report(request, "page (Django cache_page)")


@dogpile_cache_page(None)
async def report_async(request):
    """The report as an async view: under ASGI its hits are read on the
    event loop (``ASYNC_POOL``), with no thread per request."""
    made = await sync_to_async(slow_work)("page (dogpile_cache_page, async)")
    return HttpResponse(
        f"<!doctype html><title>report</title><h1>Report</h1><p id=result>{made}</p>"
        '<p><a href="/">back</a></p>'
    )


@cache_page(settings.DEMO_TIMEOUT, cache="plain")
async def report_async_plain(request):
    """Django's ``cache_page`` on the async view (Django 5.0+; its cache
    reads block the event loop, as Django's decorator makes them)."""
    made = await sync_to_async(slow_work)("page (Django cache_page, async)")
    return HttpResponse(
        f"<!doctype html><title>report</title><h1>Report</h1><p id=result>{made}</p>"
        '<p><a href="/">back</a></p>'
    )


#: a page of the report's size, made with no work and never cached
_FLOOR = (
    "<!doctype html><title>report</title><h1>Report</h1><p id=result>"
    + "page (floor: no cache, no work) computed (run #1) at 00:00:00"
    + '</p><p><a href="/">back</a></p>'
)


def floor(request):
    """What the rest of Django costs per request under WSGI (benchmarks/pages.py)."""
    return HttpResponse(_FLOOR)


async def floor_async(request):
    """The same floor as an async view: what Django costs per request under ASGI."""
    return HttpResponse(_FLOOR)


def fragment(request):
    return render(
        request,
        "demo/fragment.html",
        {"timeout": settings.DEMO_TIMEOUT, "slow": lambda: slow_work("fragment ({% dogpile_cache %})")},
    )


def fragment_plain(request):
    return render(
        request,
        "demo/fragment.html",
        {
            "plain": True,
            "timeout": settings.DEMO_TIMEOUT,
            "slow": lambda: slow_work("fragment (Django {% cache %})"),
        },
    )


@cached()
def totals() -> str:
    return slow_work("function (cached())")


def totals_plain() -> str:
    return caches["plain"].get_or_set(
        "demo:totals", lambda: slow_work("function (Django get_or_set)"), settings.DEMO_TIMEOUT
    )


def function(request):
    return HttpResponse(f"<!doctype html><title>function</title><p id=result>{totals()}</p>")


def function_plain(request):
    return HttpResponse(f"<!doctype html><title>function</title><p id=result>{totals_plain()}</p>")


def panel(request):
    """The toolbar's page: a fragment fresh for 2 s, then served stale while a
    pool thread makes it again (UPDATING), and a ``cached()`` call (HIT)."""
    return render(
        request,
        "demo/panel.html",
        {"headline": lambda: slow_work("fragment (panel page)"), "totals": totals()},
    )


#: the demo shop's one product: its price, changed by the form on /shop/
PRICE = {"value": 10}


@cached(tags=["product:1"])
def price() -> str:
    slow_work("function (cached(), tagged)")
    return f"{PRICE['value']} EUR"


@dogpile_cache_page(None, tags=["shop"])
def shop(request):
    """A page tagged "shop"; the price it shows is tagged "product:1", and that
    tag bubbles up: changing the price invalidates the page."""
    made = slow_work("page (tagged)")
    return render(request, "demo/shop.html", {"made": made, "price": price()})


@require_POST
def shop_change(request):
    """A new price, then the tag: the page and the price are stale but
    servable; each is regenerated once by its next request."""
    PRICE["value"] += 1
    invalidate_tags("product:1", hard="hard" in request.POST)
    return redirect("shop")


def _chart(rows: list[tuple[str, int]]) -> str:
    """A horizontal bar chart as inline SVG (no JavaScript, no CDN)."""
    width, bar = 420, 22
    top = max([v for _, v in rows] + [1])
    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width + 160}" '
        f'height="{len(rows) * (bar + 6) + 10}" role="img" aria-label="cache counters">'
    ]
    for i, (name, value) in enumerate(rows):
        y = 5 + i * (bar + 6)
        w = int(width * value / top)
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="13">{name}</text>'
            f'<rect x="130" y="{y}" width="{w}" height="{bar}" fill="#3b7dd8"/>'
            f'<text x="{135 + w}" y="{y + 16}" font-size="13">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


#: The face that made a key, from the prefix the faces give their keys.
FACES = {
    "dogpile.page": "dogpile_cache_page",
    "template.cache": "{% dogpile_cache %}",  # Django's fragment key
    "dogpile.fn": "cached()",
}


def _face_of(key: str) -> str:
    for prefix, face in FACES.items():
        if str(key).startswith(prefix + "."):
            return face
    return "get_or_set"


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


#: the timeline's two lines: the same page under each face (label, colour)
TIMELINE = {
    "page (Django cache_page)": ("Django cache_page /report/plain/", "#d9534f"),
    "page (dogpile_cache_page)": ("dogpile_cache_page /report/", "#3b7dd8"),
}


def stats(request):
    counters = get_stats("default")
    keys = get_key_stats("default")
    runs_per_second = timeline.read(list(TIMELINE))
    if "json" in request.GET:
        return JsonResponse(
            {"counters": counters, "runs": dict(RUNS), "keys": keys, "timeline": runs_per_second}
        )
    rows = [(name, counters[name]) for name in COUNTERS]
    per_key = [
        {
            "key": key,
            "face": _face_of(key),
            "hits": row["HIT"],
            "stale": row["UPDATING"] + row["STALE"],
            "regenerations": row["REGENERATIONS"],
            "waits": row["WAITS"],
            "errors": row["ERRORS"],
            "last": _clock(row["last_regeneration"]),
        }
        for key, row in sorted(keys.items(), key=lambda item: (_face_of(item[0]), str(item[0])))
    ]
    by_face: dict[str, dict[str, object]] = {}
    for row in per_key:
        total = by_face.setdefault(
            row["face"],
            {
                "face": row["face"],
                "keys": 0,
                "hits": 0,
                "stale": 0,
                "regenerations": 0,
                "waits": 0,
                "errors": 0,
                "last": "-",
            },
        )
        total["keys"] += 1
        for name in ("hits", "stale", "regenerations", "waits", "errors"):
            total[name] += row[name]
        if row["last"] != "-" and (total["last"] == "-" or row["last"] > total["last"]):
            total["last"] = row["last"]
    faces = [
        {"face": face, "runs": runs, "last": _clock(LAST.get(face))} for face, runs in sorted(RUNS.items())
    ]
    return render(
        request,
        "demo/stats.html",
        {
            "rows": rows,
            "keys": per_key,
            "per_face": sorted(by_face.values(), key=lambda f: str(f["face"])),
            "faces": faces,
            "chart": _chart(rows),
            "timeline": timeline.draw(
                [(*TIMELINE[face], counts) for face, counts in runs_per_second.items()]
            ),
            "window": timeline.WINDOW,
            "store": settings.STORE["BACKEND"],
        },
    )

"""The demo's views, rendered through Django's test client in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import django, os
django.setup()
from django.conf import settings
settings.DEMO_SLOW = 0.01
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
c = Client()
for path in ["/", "/report/", "/report/", "/report/plain/", "/fragment/", "/function/",
             "/fragment/plain/", "/function/plain/", "/fragment/plain/", "/function/plain/"]:
    r = c.get(path)
    assert r.status_code == 200, (path, r.status_code)
r = c.get("/stats/")
body = r.content.decode()
assert "<svg" in body and 'id="chart"' in body, body[:500]
import json
runs = json.loads(c.get("/stats/?json=1").content)["runs"]
assert runs["page (dogpile_cache_page)"] == 1, runs
assert 'id="timeline"' in body and body.count('class="series"') == 2, body
timeline = json.loads(c.get("/stats/?json=1").content)["timeline"]
assert {face: sum(counts) for face, counts in timeline.items()} == {
    "page (Django cache_page)": 1, "page (dogpile_cache_page)": 1}, timeline
assert runs["fragment (Django {% cache %})"] == 1 and runs["function (Django get_or_set)"] == 1, runs
data = json.loads(c.get("/stats/?json=1").content)
assert data["counters"]["HIT"] >= 1
pages = [row for key, row in data["keys"].items() if key.startswith("dogpile.page.")]
assert [(r["REGENERATIONS"], r["HIT"]) for r in pages] == [(1, 1)], data["keys"]
assert 'id="per-face"' in body and 'id="keys"' in body and "dogpile_cache_page" in body and "cached()" in body, body
r = c.get("/shop/")
assert r["X-Dogpile-Cache"] == "MISS" and b"10 EUR" in r.content, r.content
assert c.get("/shop/")["X-Dogpile-Cache"] == "HIT"
assert c.post("/shop/change/").status_code == 302
r = c.get("/shop/")  # the tag of the price bubbled up to the page: stale now
assert r["X-Dogpile-Cache"] == "EXPIRED" and b"11 EUR" in r.content, (r["X-Dogpile-Cache"], r.content)
assert c.get("/shop/")["X-Dogpile-Cache"] == "HIT"
c.post("/shop/change/", {"hard": "on"})
r = c.get("/shop/")
assert r["X-Dogpile-Cache"] == "MISS" and b"12 EUR" in r.content, r.content
# the async views, through the ASGI handler (AsyncClient): the benchmark's faces
import asyncio
from django.test import AsyncClient
async def asgi():
    a = AsyncClient()
    first, second = await a.get("/report/async/"), await a.get("/report/async/")
    assert (first["X-Dogpile-Cache"], second["X-Dogpile-Cache"]) == ("MISS", "HIT"), first
    assert second.content == first.content and b"dogpile_cache_page, async" in first.content
    floor = await a.get("/floor/async/")
    assert floor.status_code == 200 and not floor.has_header("X-Dogpile-Cache")
    assert c.get("/floor/").content == floor.content
    if django.VERSION >= (5, 0):
        assert (await a.get("/report/async/plain/")).status_code == 200
asyncio.run(asgi())
runs = json.loads(c.get("/stats/?json=1").content)["runs"]
assert runs["page (dogpile_cache_page, async)"] == 1, runs
print("ok")
"""


def test_demo_pages_and_stats_chart():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="testproject.settings")
    env.pop("DOGPILE_REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_timeline_draws_each_series_from_just_before_its_first_run():
    from testproject.demo import timeline

    quiet, burst = [0] * 110, [0, 5, 0, 12, 0, 0, 1, 0, 0, 0]  # WINDOW seconds, oldest first
    svg = timeline.draw([("a & b", "#111", quiet + burst), ("c", "#222", quiet + [0, 1] + [0] * 8)])
    assert svg.startswith('<svg id="timeline"') and svg.endswith("</svg>")
    # drawn from 2 s before the first run, but at least MIN_SPAN seconds
    assert f'data-span-seconds="{timeline.MIN_SPAN}"' in svg
    first = svg.split('class="series"')[1]
    assert 'data-face="a &amp; b" data-total="18"' in first
    assert 'data-counts="' + ",".join(map(str, [0] * 20 + burst)) + '"' in first
    assert "a &amp; b: 18 runs" in svg and "c: 1 run<" in svg
    assert svg.count("<circle") == 4  # a point for each second with runs
    assert ">20<" in svg and ">-30 s<" in svg and ">now<" in svg  # the axes: 12 rounded up, seconds ago

    early = [0] * 10 + [3] + [0] * 109  # a run 110 s ago: drawn from 2 s before it
    assert 'data-span-seconds="112"' in timeline.draw([("a", "#111", early)])


TOOLBAR_SCRIPT = r"""
import asyncio, re, time
import django
django.setup()
from django.conf import settings
settings.DEMO_SLOW = 0.01
from django.test import AsyncClient, Client
from django.test.utils import setup_test_environment
setup_test_environment()
ROW = re.compile(r'<tr class="djdt-dogpile-call" data-status="([^"]*)" data-depth="0">'
                 r'\s*<td>[^<]*</td>\s*<td[^>]*>([^<]*)</td>\s*<td>([^<]*)</td>')

def panel(body):
    return sorted((alias, method, word) for word, method, alias in ROW.findall(body))

c = Client()  # the panels rendered into the page (DEMO_TOOLBAR_RENDER=1)
first = c.get("/panel/").content.decode()
assert panel(first) == [("background", "get_or_set", "MISS"), ("default", "get_or_set", "MISS")], first[-3000:]
assert "2 calls · 2 MISS" in first
time.sleep(2.1)  # the fragment lives 2 s
stale = c.get("/panel/").content.decode()
assert panel(stale) == [("background", "get_or_set", "UPDATING"), ("default", "get_or_set", "HIT")], stale[-3000:]
time.sleep(0.5)  # the pool thread made it again

async def asgi():
    body = (await AsyncClient().get("/panel/")).content.decode()
    assert panel(body) == [("background", "get_or_set", "HIT"), ("default", "get_or_set", "HIT")], body[-3000:]
    assert "2 calls · 2 HIT" in body
asyncio.run(asgi())
# a page under dogpile_cache_page: the page's call, the view's calls a level down
body = c.get("/shop/").content.decode()
assert 'data-status="MISS" data-depth="0"' in body and 'data-depth="1"' in body, body[-3000:]
print("ok")
"""


def test_the_toolbar_panel_through_the_test_client():
    """The Dogpile panel in django-debug-toolbar, WSGI (Client) and ASGI
    (AsyncClient), the demo's middleware (sessions, auth) around it."""
    pytest.importorskip("debug_toolbar")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="testproject.settings", DEMO_TOOLBAR="1")
    env.update(DEMO_TOOLBAR_RENDER="1", DEMO_DB=str(Path(tempfile.mkdtemp()) / "db.sqlite3"))
    env.pop("DOGPILE_REDIS_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    out = subprocess.run(
        [sys.executable, "-c", TOOLBAR_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")

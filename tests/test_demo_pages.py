"""The demo's views, rendered through Django's test client in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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
assert runs["fragment (Django {% cache %})"] == 1 and runs["function (Django get_or_set)"] == 1, runs
data = json.loads(c.get("/stats/?json=1").content)
assert data["counters"]["HIT"] >= 1
pages = [row for key, row in data["keys"].items() if key.startswith("dogpile.page.")]
assert [(r["REGENERATIONS"], r["HIT"]) for r in pages] == [(1, 1)], data["keys"]
assert 'id="per-face"' in body and 'id="keys"' in body and "dogpile_cache_page" in body and "cached()" in body, body
print("ok")
"""


def test_demo_pages_and_stats_chart():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="testproject.settings")
    env.pop("DOGPILE_REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")

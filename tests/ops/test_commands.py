"""``manage.py dogpile``: counters across real processes, one key's state."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from tests.helpers.procs import hits_then_linger, hold_forever_on

SPAWN = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.redis


def command(*args):
    out = io.StringIO()
    call_command("dogpile", *args, stdout=out)
    return out.getvalue()


@pytest.mark.slow
def test_stats_are_summed_over_every_process():
    caches["dp_redis"].clear()
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=hits_then_linger, args=("dp_redis", "counted", n, results)) for n in (5, 7, 9)
    ]
    for p in procs:
        p.start()
    assert [results.get(timeout=60) for _ in procs] == ["done"] * 3
    for p in procs:
        p.join(15)
    import json

    data = json.loads(command("stats", "--alias", "dp_redis", "--json"))
    children = {k: v for k, v in data["processes"].items() if not k.endswith(f".{os.getpid()}")}
    assert len(children) == 3
    # each child: one MISS (it made or waited for the value), the rest hits
    assert sum(row["HIT"] + row["MISS"] + row["UPDATING"] for row in children.values()) == 21
    assert data["total"]["HIT"] >= sum(row["HIT"] for row in children.values())
    text = command("stats", "--alias", "dp_redis")
    assert "4 process(es)" in text or "3 process(es)" in text


@pytest.mark.slow
def test_inspect_shows_the_record_and_a_lease_held_by_another_process():
    cache = caches["dp_redis"]
    cache.clear()
    cache.set("report", "value", 60)
    text = command("inspect", "report", "--alias", "dp_redis")
    assert "fresh for" in text and "store ttl" in text and "lease     free" in text
    started = SPAWN.Event()
    p = SPAWN.Process(
        target=hold_forever_on,
        args=("redis", "", "cold", {"LOCK_TIMEOUT": 30}, started),
    )
    p.start()
    try:
        assert started.wait(30)
        from tests.helpers.procs import make_cache

        same_store = make_cache("redis", "", LOCK_TIMEOUT=30)
        from django_dogpile.management.commands.dogpile import inspect_key

        lines = "\n".join(inspect_key(same_store, "cold"))
        assert "state     missing" in lines and "held by token" in lines and "s more" in lines
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(5)


def test_invalidate_makes_a_key_stale():
    cache = caches["dp_redis"]
    cache.set("inv", "old", 60)
    assert "invalidated" in command("invalidate", "inv", "--alias", "dp_redis")
    assert cache.get("inv") is None
    assert "stale (invalidated)" in command("inspect", "inv", "--alias", "dp_redis")
    assert cache.get_or_set_status("inv", "new", 60) == ("new", "EXPIRED")
    assert "no value" in command("invalidate", "nothing-here", "--alias", "dp_redis")


def test_bad_alias_is_a_clear_error():
    with pytest.raises(CommandError, match="not a cache alias"):
        command("stats", "--alias", "nope")
    with pytest.raises(CommandError, match="not a DogpileCache"):
        command("stats", "--alias", "redis")


def test_stats_interval_is_validated():
    from django_dogpile.checks import check_dogpile_setting

    with override_settings(DOGPILE={"STATS_INTERVAL": -1}):
        assert [m.id for m in check_dogpile_setting()] == ["django_dogpile.E012"]


def test_prometheus_export_sums_the_published_counters():
    from django.test import RequestFactory

    from django_dogpile.engine.shared_stats import publish_now
    from django_dogpile.prometheus import metrics_view
    from django_dogpile.stats import reset_stats

    cache = caches["dp_redis"]
    cache.clear()
    reset_stats("dp_redis")
    cache.get_or_set("p", "v", 60)
    cache.get_or_set("p", "v", 60)
    publish_now()
    response = metrics_view(RequestFactory().get("/metrics"))
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/plain")
    assert 'django_dogpile_events_total{alias="dp_redis",event="HIT"} 1.0' in text
    assert 'django_dogpile_events_total{alias="dp_redis",event="MISS"} 1.0' in text
    assert 'django_dogpile_processes{alias="dp_redis"}' in text


CLIENTS = 8


@pytest.fixture(scope="module")
def stampeded_demo():
    """The demo under runserver, after ``dogpile stampede /report/ --compare
    /report/plain/``: (the server, the command's output)."""
    from tests.helpers.demo_server import DemoServer

    server = DemoServer(DEMO_TIMEOUT="1")
    server.start()
    try:
        out = command(
            "stampede",
            server.url + "/report/",
            "--compare",
            server.url + "/report/plain/",
            "--clients",
            str(CLIENTS),
            "--duration",
            "2.5",
        )
        yield server, out
    finally:
        server.stop()


@pytest.mark.slow
def test_stampede_command_against_a_running_site(stampeded_demo):
    """The comparison ships with the package: any running site, two URLs."""
    server, out = stampeded_demo
    lines = out.splitlines()
    ours = next(line for line in lines if line.startswith(server.url + "/report/ "))
    theirs = next(line for line in lines if "/report/plain/" in line)
    requests, errors = int(ours.split()[1]), int(ours.split()[2])
    runs = int(ours.split()[6])
    assert requests > 20 and errors == 0
    assert 1 <= runs <= 3, ours  # one regeneration per 1 s expiry in 2.5 s
    assert "HIT=" in ours and "UPDATING=" in ours
    assert theirs.split()[6] == "?"  # Django's face says nothing about view runs


@pytest.mark.slow
def test_stats_page_draws_the_stampede_on_each_face_over_time(stampeded_demo):
    """/stats/ draws view runs per second of /report/plain/ (Django's
    cache_page) and /report/ (dogpile_cache_page): Django's face runs the view
    for every waiting client at each expiry, ours once."""
    import json
    import re
    import urllib.request
    import xml.etree.ElementTree as ET

    server, _out = stampeded_demo
    body = urllib.request.urlopen(server.url + "/stats/", timeout=10).read().decode()
    runs = json.load(urllib.request.urlopen(server.url + "/stats/?json=1", timeout=10))["runs"]
    svg = ET.fromstring(re.search(r'<svg id="timeline".*?</svg>', body, re.S).group(0))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    lines = {p.get("data-face").split()[0]: p for p in svg.iterfind("svg:polyline[@class='series']", ns)}
    assert set(lines) == {"Django", "dogpile_cache_page"}, lines
    counts = {face: [int(c) for c in p.get("data-counts").split(",")] for face, p in lines.items()}
    for face, p in lines.items():
        assert sum(counts[face]) == int(p.get("data-total"))
        assert len(p.get("points").split()) == len(counts[face])  # one point per second
    legend = " ".join(t.text or "" for t in svg.iterfind("svg:text", ns))
    django, dogpile = sum(counts["Django"]), sum(counts["dogpile_cache_page"])
    assert f"Django cache_page /report/plain/: {django} runs" in legend, legend
    # the picture counts what the views counted (one process, all in the window)
    assert django == runs["page (Django cache_page)"] and dogpile == runs["page (dogpile_cache_page)"]
    # ours: the first creation, then one per 1 s expiry; Django's: every client at the first miss
    assert 2 <= dogpile <= 4, counts
    assert django >= CLIENTS and django > dogpile, counts
    # over time: /report/ was stampeded first, then /report/plain/
    last_ours = max(i for i, c in enumerate(counts["dogpile_cache_page"]) if c)
    first_django = min(i for i, c in enumerate(counts["Django"]) if c)
    assert last_ours <= first_django, counts

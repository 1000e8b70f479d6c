"""``manage.py dogpile``: counters across real processes, one key's state."""

from __future__ import annotations

import contextlib
import http.server
import io
import ipaddress
import multiprocessing
import os
import signal
import socket
import threading

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from tests.helpers.procs import hits_then_linger, hold_forever_on
from tests.helpers.redis_server import free_port

SPAWN = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.redis


def command(*args):
    out = io.StringIO()
    call_command("dogpile", *args, stdout=out)
    return out.getvalue()


@pytest.mark.slow
def test_stats_are_summed_over_every_process():
    """Three processes count and exit cleanly: each folds its record into
    the totals at exit, so their counts stay and they are no longer listed."""
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
    assert children == {}
    # each child: one MISS (it made or waited for the value), the rest hits
    assert sum(data["retired"][name] for name in ("HIT", "MISS", "UPDATING")) == 21
    assert data["total"]["HIT"] >= data["retired"]["HIT"]
    text = command("stats", "--alias", "dp_redis")
    assert "0 process(es)" in text or "1 process(es)" in text  # this one, if it used dp_redis


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


def test_invalidate_of_a_missing_key_fails_and_inspect_does_not():
    """Nothing invalidated is an error (exit 1); a missing key is a state
    ``inspect`` reports (exit 0)."""
    caches["dp_redis"].delete("nothing-here")
    with pytest.raises(CommandError, match="nothing was invalidated"):
        command("invalidate", "nothing-here", "--alias", "dp_redis")
    assert "state     missing" in command("inspect", "nothing-here", "--alias", "dp_redis")


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
    assert requests > 20 and errors == 0 and int(theirs.split()[2]) == 0
    assert 1 <= ours.count("EXPIRED=") and "HIT=" in ours and "UPDATING=" in ours


@pytest.mark.slow
def test_stampede_counts_the_view_runs_of_both_faces(stampeded_demo):
    """``runs`` is read from the responses (each run makes a new page) and is
    what the demo's views counted, on Django's face as on ours."""
    import json
    import urllib.request

    server, out = stampeded_demo
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(server.url)}
    counted = json.load(urllib.request.urlopen(server.url + "/stats/?json=1", timeout=10))["runs"]
    ours, django = int(rows[server.url + "/report/"][6]), int(rows[server.url + "/report/plain/"][6])
    assert ours == counted["page (dogpile_cache_page)"] and 2 <= ours <= 4, out
    assert django == counted["page (Django cache_page)"] and django >= CLIENTS, out


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


class _Site(http.server.BaseHTTPRequestHandler):
    """A site of its own on loopback: ``/cached`` is one page that a new
    run (``X-Run``) replaces every 10 requests, ``/fail`` fails every other
    request with a 500."""

    served = 0
    lock = threading.Lock()

    def do_GET(self):
        with self.lock:
            type(self).served += 1
            n = type(self).served
        if self.path == "/fail" and n % 2:
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("X-Run", str(n // 10))
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"same")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(address, name):
    server = http.server.ThreadingHTTPServer((address, 0), _Site)
    _Site.served = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{name}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site():
    with serving("127.0.0.1", "localhost") as url:
        yield url


def stampede_row(out, url):
    return next(line.split() for line in out.splitlines() if line.startswith(url + " "))


def test_stampede_paces_each_client_and_counts_runs_by_a_run_header(site):
    out = command("stampede", site + "/cached", "--clients", "2", "--duration", "1", "--rate", "4")
    row = stampede_row(out, site + "/cached")
    assert 4 <= int(row[1]) <= 10, out  # 2 clients x 4/s x 1 s, not hundreds
    assert row[6] == "?" and "nothing tells one run from another" in out
    _Site.served = 0
    out = command("stampede", site + "/cached", "--clients", "2", "--duration", "1", "--run-header", "X-Run")
    row = stampede_row(out, site + "/cached")
    assert int(row[1]) > 40 and int(row[6]) == _Site.served // 10 + 1, out


def test_stampede_fails_when_requests_fail(site):
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"/fail: \d+ of \d+ requests failed \(HTTP 500 x"):
        call_command(
            "dogpile",
            "stampede",
            site + "/cached",
            "--compare",
            site + "/fail",
            "--clients",
            "2",
            "--duration",
            "0.5",
            "--rate",
            "20",
            stdout=out,
        )
    assert stampede_row(out.getvalue(), site + "/cached")[2] == "0"  # the table came first
    with pytest.raises(CommandError, match="connection refused"):
        command("stampede", f"http://127.0.0.1:{free_port()}/", "--clients", "1", "--duration", "0.3")


def test_stampede_refuses_a_host_that_is_not_loopback(site):
    with pytest.raises(CommandError, match="198.51.100.1, not a loopback address.*--i-own-this-host"):
        command("stampede", site + "/cached", "--compare", "http://198.51.100.1:9/", "--duration", "0.3")
    assert _Site.served == 0  # refused before any load, the first URL too


def test_stampede_loads_a_host_you_own_with_the_flag():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("198.51.100.1", 9))  # UDP: no packet, just the route's own address
        own = probe.getsockname()[0]
    except OSError:
        own = "127.0.0.1"
    finally:
        probe.close()
    if ipaddress.ip_address(own).is_loopback:
        pytest.skip("this host has no address but loopback")
    with serving(own, own) as url:
        args = ("stampede", url + "/cached", "--clients", "1", "--duration", "0.3", "--rate", "10")
        with pytest.raises(CommandError, match="--i-own-this-host"):
            command(*args)
        assert int(stampede_row(command(*args, "--i-own-this-host"), url + "/cached")[1]) >= 2

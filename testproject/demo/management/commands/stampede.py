"""``manage.py stampede``: Django's cache_page against dogpile_cache_page.

Starts the demo in this process (or targets ``--url``), fires N concurrent
clients at the page cached with Django's ``cache_page`` and then at the same
page under ``dogpile_cache_page``, across several expiries, and prints a
table: requests, view executions, latency p50/p99/max, errors.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError
from django.core.wsgi import get_wsgi_application


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Command(BaseCommand):
    help = "Compare Django's cache_page with dogpile_cache_page under concurrent load."

    def add_arguments(self, parser):
        parser.add_argument("--clients", type=int, default=32, help="concurrent clients (threads)")
        parser.add_argument("--duration", type=float, default=8.0, help="seconds per page")
        parser.add_argument("--timeout", type=int, default=None, help="cache freshness, seconds (default 1)")
        parser.add_argument("--creator-time", type=float, default=0.2, help="seconds the view works")
        parser.add_argument("--redis", default=None, help="use this Redis URL as the store")
        parser.add_argument(
            "--url", default=None, help="target a running demo instead (e.g. http://127.0.0.1:8000)"
        )

    def handle(self, *args, **opts):
        timeout = opts["timeout"] or 1
        if opts["url"] is None and (
            timeout != settings.DEMO_TIMEOUT or (opts["redis"] or None) != (settings.REDIS_URL or None)
        ):
            # the page decorators read these at import: start again with them set
            env = dict(os.environ, DEMO_TIMEOUT=str(timeout))
            if opts["redis"]:
                env["DOGPILE_REDIS_URL"] = opts["redis"]
            argv = [sys.executable, sys.argv[0], "stampede", *sys.argv[2:]]
            if "--timeout" not in sys.argv:
                argv += ["--timeout", str(timeout)]
            os.execve(sys.executable, argv, env)
        if opts["clients"] < 1 or opts["duration"] <= 0:
            raise CommandError("--clients must be >= 1 and --duration > 0")
        settings.DEMO_SLOW = opts["creator_time"]
        server = None
        base = opts["url"]
        if base is None:
            caches["store"].clear()
            server = make_server("127.0.0.1", 0, get_wsgi_application(), _Server, _Quiet)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{server.server_port}"
        base = base.rstrip("/")
        self.stdout.write(
            f"{opts['clients']} clients, {opts['duration']:.0f}s per page, freshness {timeout}s, "
            f"view takes {opts['creator_time']}s, store {settings.STORE['BACKEND'] if not opts['url'] else base}"
        )
        rows = []
        for label, path in (("Django cache_page", "/report/plain/"), ("dogpile_cache_page", "/report/")):
            rows.append(self._run(label, base, path, opts))
        if server is not None:
            server.shutdown()
        self._table(rows, opts, timeout)

    def _runs(self, base):
        with urllib.request.urlopen(base + "/stats/?json=1", timeout=10) as r:
            return json.load(r)["runs"]

    def _run(self, label, base, path, opts):
        before = self._runs(base)
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop_at = time.monotonic() + opts["duration"]

        def client():
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    with urllib.request.urlopen(base + path, timeout=30) as r:
                        r.read()
                        ok = r.status == 200
                except Exception:
                    ok = False
                with lock:
                    latencies.append(time.monotonic() - t0)
                    if not ok:
                        errors[0] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(opts["clients"])]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            with lock:
                done = len(latencies)
            left = max(0.0, stop_at - time.monotonic())
            self.stdout.write(f"\r  {label}: {done} requests, {left:4.1f}s left   ", ending="")
            self.stdout.flush()
        self.stdout.write("")
        after = self._runs(base)
        runs = sum(after.values()) - sum(before.values())
        return {
            "label": label,
            "requests": len(latencies),
            "runs": runs,
            "errors": errors[0],
            "p50": _pct(latencies, 50),
            "p99": _pct(latencies, 99),
            "max": max(latencies or [0]),
        }

    def _table(self, rows, opts, timeout):
        expiries = opts["duration"] / timeout
        self.stdout.write("")
        self.stdout.write(
            f"{'':20} {'requests':>9} {'view runs':>10} {'runs/expiry':>12} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}"
        )
        for r in rows:
            self.stdout.write(
                f"{r['label']:20} {r['requests']:>9} {r['runs']:>10} {r['runs'] / expiries:>12.1f} "
                f"{r['p50'] * 1000:>8.1f} {r['p99'] * 1000:>8.1f} {r['max'] * 1000:>8.1f} {r['errors']:>7}"
            )

"""``manage.py dogpile``: look at what DogpileCache is doing.

* ``dogpile stats [--alias A]`` -- the counters summed over every process
  sharing the store (each publishes every ``DOGPILE["STATS_INTERVAL"]``
  seconds), and per process;
* ``dogpile inspect KEY [--alias A] [--version N]`` -- one key: fresh,
  stale or missing; its age, when it goes stale, how long the store keeps
  it; who holds its lease and for how long;
* ``dogpile invalidate KEY [--alias A]`` -- make it stale (the next
  ``get_or_set`` regenerates it once; the others keep the old value);
* ``dogpile stampede URL [--compare URL2] [--clients N] [--duration S]`` --
  fire N concurrent clients at a page of any running site (loopback or
  your own hosts only) and report requests, latency, errors and the
  ``X-Dogpile-Cache`` statuses: each ``EXPIRED`` is a request that ran
  the view at an expiry (``MISS`` counts the first creation and the
  requests that waited for it).  ``--compare`` runs the same load on a second URL
  (e.g. the same page under Django's ``cache_page``) side by side.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_dogpile.cache import LOCK_SUFFIX, DogpileCache
from django_dogpile.conf import dogpile_aliases
from django_dogpile.engine.shared_stats import publish_now, shared_stats
from django_dogpile.records import INVALIDATED, MISSING, is_record
from django_dogpile.stores import RedisAdapter
from django_dogpile.stores.kinds import kind_of


class Command(BaseCommand):
    help = "Counters across processes, and one key's state, for DogpileCache aliases."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        stats = sub.add_parser("stats", help="counters summed over every process")
        stats.add_argument("--alias", default=None)
        stats.add_argument("--json", action="store_true")
        storm = sub.add_parser("stampede", help="concurrent clients on a page of a running site")
        storm.add_argument("url")
        storm.add_argument("--compare", default=None, help="a second URL, run after the first")
        storm.add_argument("--clients", type=int, default=32)
        storm.add_argument("--duration", type=float, default=6.0)
        storm.add_argument("--header", default=None, help="status header (DOGPILE['STATUS_HEADER'])")
        for name, text in (("inspect", "one key's state"), ("invalidate", "make a key stale")):
            one = sub.add_parser(name, help=text)
            one.add_argument("key")
            one.add_argument("--alias", default=None)
            one.add_argument("--version", type=int, default=None)

    def _cache(self, alias: str | None) -> DogpileCache:
        if alias is None:
            aliases = dogpile_aliases()
            if not aliases:
                raise CommandError("no DogpileCache alias in CACHES")
            alias = "default" if "default" in aliases else aliases[0]
        if alias not in settings.CACHES:
            raise CommandError(f"{alias!r} is not a cache alias ({', '.join(settings.CACHES)})")
        cache = caches[alias]
        if not isinstance(cache, DogpileCache):
            raise CommandError(f"{alias!r} is not a DogpileCache")
        return cache

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "stampede":
            self._stampede(options)
            return
        cache = self._cache(options["alias"])
        if action == "stats":
            cache.store  # noqa: B018 - connect (this process publishes too)
            publish_now()
            data = shared_stats(cache.alias)
            if options["json"]:
                self.stdout.write(json.dumps(data, indent=2, sort_keys=True))
                return
            self.stdout.write(f"{cache.alias}: {len(data['processes'])} process(es)")
            for name, n in data["total"].items():
                self.stdout.write(f"  {name:<14} {n}")
            for proc, row in data["processes"].items():
                age = time.time() - row.get("at", time.time())
                counts = " ".join(
                    f"{k}={row.get(k, 0)}" for k in ("HIT", "UPDATING", "MISS", "REGENERATIONS")
                )
                self.stdout.write(f"  {proc} ({age:.0f}s ago): {counts}")
            return
        key, version = options["key"], options["version"]
        if action == "invalidate":
            done = cache.invalidate(key, version=version)
            self.stdout.write(f"{key}: {'invalidated' if done else 'no value to invalidate'}")
            return
        for line in inspect_key(cache, key, version):
            self.stdout.write(line)

    def _stampede(self, options: dict[str, Any]) -> None:
        from django_dogpile.conf import get_config

        header = options["header"] or get_config()["STATUS_HEADER"] or "X-Dogpile-Cache"
        if options["clients"] < 1 or options["duration"] <= 0:
            raise CommandError("--clients must be >= 1 and --duration > 0")
        urls = [options["url"]] + ([options["compare"]] if options["compare"] else [])
        self.stdout.write(
            f"{options['clients']} clients, {options['duration']:g} s per URL\n"
            f"{'url':<40} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'expiries':>9}  statuses"
        )
        for url in urls:
            row = stampede(url, options["clients"], options["duration"], header)
            runs = row["statuses"].get("EXPIRED", 0)
            statuses = " ".join(f"{k}={v}" for k, v in sorted(row["statuses"].items())) or "-"
            self.stdout.write(
                f"{url[:40]:<40} {row['requests']:>8} {row['errors']:>6} {row['p50']:>7.1f} "
                f"{row['p99']:>7.1f} {row['max']:>7.1f} "
                f"{runs if row['statuses'] else '?':>9}  {statuses}"
            )


def stampede(url: str, clients: int, duration: float, header: str) -> dict[str, Any]:
    """``clients`` threads request ``url`` for ``duration`` seconds (bounded)."""
    import threading
    import urllib.error
    import urllib.request
    from collections import Counter

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def client() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    response.read()
                    status = (response.headers.get(header) or "").split(";")[0]
                ok = True
            except (urllib.error.URLError, OSError):
                ok, status = False, ""
            took = (time.monotonic() - started) * 1000
            with lock:
                latencies.append(took)
                if not ok:
                    errors[0] += 1
                elif status:
                    statuses[status] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    return {
        "requests": len(latencies),
        "errors": errors[0],
        "statuses": dict(statuses),
        "p50": pct(50),
        "p99": pct(99),
        "max": ordered[-1],
    }


def inspect_key(cache: DogpileCache, key: str, version: int | None = None) -> list[str]:
    """Describe one key of ``cache``: its record and its lease."""
    skey = cache.make_and_validate_key(key, version)
    raw = cache.store.get(skey, MISSING)
    now = time.time()
    lines = [f"key       {key!r} (in the store: {skey!r})"]
    if not is_record(raw):
        lines.append("state     missing" if raw is MISSING else "state     not a DogpileCache record")
    else:
        _value, created, expires, cost = raw
        if expires is None:
            state = "fresh (never goes stale)"
        elif expires == INVALIDATED:
            state = "stale (invalidated)"
        elif now < expires:
            state = f"fresh for {expires - now:.1f}s more"
        else:
            state = f"stale since {now - expires:.1f}s (servable for GRACE {cache.options.grace:g}s)"
        lines += [f"state     {state}", f"age       {now - created:.1f}s", f"cost      {cost:.3f}s to make"]
    kind = kind_of(caches[cache.location])
    lines.append(f"store     {kind.name}: lease {kind.native}, reaching {kind.reach}")
    slot = _slot(cache, skey)
    if slot:
        lines.append(f"slot      {slot}")
    lines.append(f"store ttl {_ttl(cache, skey)}")
    lines.append(f"lease     {_lease(cache, skey)}")
    return lines


def _redis(cache: DogpileCache, skey: str) -> Any:
    """The client of the Redis server holding ``skey`` (and its lease), or None."""
    adapter = cache.binding.adapter
    if not isinstance(adapter, RedisAdapter):
        return None
    return adapter.client_for(adapter.raw_key(skey))


def _slot(cache: DogpileCache, skey: str) -> str | None:
    """On a Redis Cluster: the record's slot and the primary serving it."""
    client = _redis(cache, skey)
    if client is None or not getattr(cache.binding.adapter, "cluster", False):
        return None
    raw = str(cache.store.make_key(skey))
    return f"{client.keyslot(raw)} on {client.get_node_from_key(raw).name} (with its lease and hold)"


def _ttl(cache: DogpileCache, skey: str) -> str:
    client = _redis(cache, skey)
    if client is None:
        return "(this store does not tell)"
    pttl = client.pttl(str(cache.store.make_key(skey)))
    return "none (kept forever)" if pttl == -1 else "gone" if pttl == -2 else f"{pttl / 1000:.1f}s"


def _lease(cache: DogpileCache, skey: str) -> str:
    lock_key = skey + LOCK_SUFFIX
    client = _redis(cache, skey)
    if client is not None:
        raw_key = str(cache.store.make_key(lock_key))
        holder, pttl = client.get(raw_key), client.pttl(raw_key)
        hold = client.pttl(raw_key + ":retry")
        text = (
            "free" if holder is None else f"held by token {holder.decode()[:8]}… for {pttl / 1000:.1f}s more"
        )
        return text + (f"; RETRY_AFTER hold for {hold / 1000:.1f}s more" if hold > 0 else "")
    if cache.binding.adapter.lease is None:
        return "in-process only (locmem): nothing shared to show"
    lease = cache.binding.adapter.lease(lock_key, skey)
    holder = lease._holder() if hasattr(lease, "_holder") else cache.store.get(lock_key)
    if hasattr(lease, "_read"):  # the file lease
        current = lease._read()
        if current is None:
            return "free"
        return f"held by token {current[0][:8]}… for {current[1] - time.time():.1f}s more"
    return "free" if holder is None else f"held by token {str(holder)[:8]}…"

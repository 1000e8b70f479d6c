"""``manage.py dogpile``: look at what DogpileCache is doing.

* ``dogpile stats [--alias A]`` -- the counters summed over every process
  sharing the store (each publishes every ``DOGPILE["STATS_INTERVAL"]``
  seconds; those of processes that exited stay in the sum), and per
  serving process;
* ``dogpile inspect KEY [--alias A] [--version N]`` -- one key: fresh,
  stale or missing; its age, when it goes stale, how long the store keeps
  it; who holds its lease and for how long;
* ``dogpile inspect|invalidate /path/ [--alias A] [--prefix P]`` -- the
  same for every stored variant of a page (its URL or path);
* ``dogpile invalidate KEY [--alias A]`` -- make it stale (the next
  ``get_or_set`` regenerates it once; the others keep the old value); a key
  with no value is an error (exit 1: nothing was invalidated), while
  ``inspect`` of a missing key prints ``state missing`` and exits 0;
* ``dogpile invalidate --tag T [--tag T2] [--hard] [--alias A]`` -- every
  value carrying a tag becomes stale (``--hard``: a miss), on every
  DogpileCache alias unless ``--alias``; a tag nothing carries is a no-op;
* ``dogpile stampede URL [--compare URL2] [--clients N] [--duration S]
  [--rate R]`` -- fire N concurrent clients at a page of a running site
  (loopback only, unless ``--i-own-this-host``) and report requests,
  latency, errors, the view runs seen in the responses (either face; how:
  ``STAMPEDE_HELP`` below) and the ``X-Dogpile-Cache`` statuses.
  ``--compare`` runs the same load on a second URL (e.g. the same page
  under Django's ``cache_page``) side by side.  Any failed request makes
  the command fail (exit 1) after the table.
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
from django_dogpile.faces.page_index import invalidate_page, page_keys
from django_dogpile.invalidation import invalidate_tags
from django_dogpile.management.stampede import OWN_FLAG, check_target, failure_summary, stampede
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
        storm = sub.add_parser(
            "stampede", help="concurrent clients on a page of a running site", description=STAMPEDE_HELP
        )
        storm.add_argument("url")
        storm.add_argument("--compare", default=None, help="a second URL, run after the first")
        storm.add_argument("--clients", type=int, default=32)
        storm.add_argument("--duration", type=float, default=6.0, help="seconds per URL")
        storm.add_argument(
            "--rate", type=float, default=0.0, help="at most R requests per second per client (0: no pause)"
        )
        storm.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
        storm.add_argument("--header", default=None, help="status header (DOGPILE['STATUS_HEADER'])")
        storm.add_argument(
            "--run-header", default=None, help="a response header the view sets to a new value per run"
        )
        storm.add_argument(
            OWN_FLAG, dest="own_host", action="store_true", help="allow a host that is not loopback"
        )
        for name, text in (("inspect", "one key's state"), ("invalidate", "make a key stale")):
            one = sub.add_parser(name, help=f"{text}, or every stored variant of a page (a URL or /path/)")
            one.add_argument(
                "key", nargs="?" if name == "invalidate" else None, help="a cache key, or a URL or /path/"
            )
            if name == "invalidate":
                one.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
                one.add_argument("--hard", action="store_true", help="with --tag: misses, not stale")
            one.add_argument("--alias", default=None)
            one.add_argument("--version", type=int, default=None)
            one.add_argument(
                "--prefix", default=None, help="a page face's key_prefix (CACHE_MIDDLEWARE_KEY_PREFIX)"
            )

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
        if action == "invalidate" and options["tag"]:
            self._tags(options)
            return
        if action == "invalidate" and options["key"] is None:
            raise CommandError("invalidate needs a key, a URL or /path/, or --tag T")
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
            retired = " ".join(
                f"{k}={data['retired'][k]}" for k in ("HIT", "UPDATING", "MISS", "REGENERATIONS")
            )
            self.stdout.write(f"  of which from processes that exited: {retired}")
            for proc, row in data["processes"].items():
                age = time.time() - row.get("at", time.time())
                counts = " ".join(
                    f"{k}={row.get(k, 0)}" for k in ("HIT", "UPDATING", "MISS", "REGENERATIONS")
                )
                self.stdout.write(f"  {proc} ({age:.0f}s ago): {counts}")
            return
        key, version = options["key"], options["version"]
        if key.startswith(("/", "http://", "https://")):
            self._page(action, cache, key, options["prefix"])
            return
        if action == "invalidate":
            if not cache.invalidate(key, version=version):
                raise CommandError(f"{key}: no value in {cache.alias}: nothing was invalidated")
            self.stdout.write(f"{key}: invalidated")
            return
        for line in inspect_key(cache, key, version):
            self.stdout.write(line)

    def _tags(self, options: dict[str, Any]) -> None:
        if options["key"] is not None:
            raise CommandError("invalidate takes a key or --tag, not both")
        aliases = [self._cache(options["alias"]).alias] if options["alias"] else dogpile_aliases()
        if not aliases:
            raise CommandError("no DogpileCache alias in CACHES")
        for tag in options["tag"]:
            hit = [alias for alias in aliases if invalidate_tags(tag, hard=options["hard"], using=alias)]
            how = "hard" if options["hard"] else "stale"
            if hit:
                self.stdout.write(f"tag {tag}: invalidated ({how}) on {', '.join(hit)}")
            else:
                self.stdout.write(f"tag {tag}: nothing carries it; nothing to do")

    def _page(self, action: str, cache: DogpileCache, url: str, prefix: str | None) -> None:
        """``inspect``/``invalidate`` of a page: every variant stored for the URL."""
        keys = page_keys(url, cache=cache.alias, key_prefix=prefix)
        where = f"page {url} in {cache.alias}" + (f" (key prefix {prefix!r})" if prefix else "")
        if action == "invalidate":
            if not keys:
                raise CommandError(f"{where}: no stored variant: nothing was invalidated")
            invalidate_page(url, cache=cache.alias, key_prefix=prefix)
            self.stdout.write(f"{where}: {len(keys)} variant(s) invalidated")
            return
        self.stdout.write(f"{where}: {len(keys)} stored variant(s)")
        if not keys:
            self.stdout.write(
                "state     missing (no page stored for this path; a page face with another cache "
                "alias or key prefix: --alias, --prefix)"
            )
        for key in keys:
            self.stdout.write("")
            for line in inspect_key(cache, key):
                self.stdout.write(line)

    def _stampede(self, options: dict[str, Any]) -> None:
        from django_dogpile.conf import get_config

        header = options["header"] or get_config()["STATUS_HEADER"] or "X-Dogpile-Cache"
        if options["clients"] < 1 or options["duration"] <= 0:
            raise CommandError("--clients must be >= 1 and --duration > 0")
        if options["rate"] < 0 or options["timeout"] <= 0:
            raise CommandError("--rate must be >= 0 and --timeout > 0")
        urls = [options["url"]] + ([options["compare"]] if options["compare"] else [])
        for url in urls:  # every URL before any load
            check_target(url, options["own_host"])
        clients = options["clients"]
        pace = f", at most {options['rate']:g} requests/s per client" if options["rate"] else ""
        self.stdout.write(
            f"{clients} clients, {options['duration']:g} s per URL{pace}\n"
            f"{'url':<40} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'runs':>6}  statuses"
        )
        results, notes = [], []
        for url in urls:
            row = stampede(
                url,
                clients,
                options["duration"],
                header,
                rate=options["rate"],
                run_header=options["run_header"],
                timeout=options["timeout"],
            )
            results.append(row)
            notes += row.notes(clients)
            statuses = " ".join(f"{k}={v}" for k, v in sorted(row.statuses.items())) or "-"
            self.stdout.write(
                f"{url[:40]:<40} {row.requests:>8} {row.errors:>6} {row.pct(50):>7.1f} "
                f"{row.pct(99):>7.1f} {row.pct(100):>7.1f} {row.runs:>6}  {statuses}"
            )
        self.stdout.write("runs: distinct pages (body, Expires, Last-Modified, ETag) among the responses")
        for note in notes:
            self.stdout.write(f"note: {note}")
        failed = failure_summary(results)
        if failed:
            raise CommandError(failed)


STAMPEDE_HELP = """\
Concurrent clients on a page of a running site you own.  The URLs must
resolve to loopback addresses unless --i-own-this-host is given.  "runs" is
the number of view runs seen in the responses, for either face: a cached page
is replayed with the body and the Expires, Last-Modified and ETag it was made
with, so each run makes a new page; it is exact when each run's page differs
(or --run-header names a header set anew per run), a lower bound (>=N) when
only Expires tells runs apart (to the second), and ? when nothing does.
Redirects are not followed.  Any failed request (an HTTP error, a redirect, a
timeout, a refused connection) makes the command exit 1 after the table."""


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

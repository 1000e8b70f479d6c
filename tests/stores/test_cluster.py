"""DogpileCache on a real Redis Cluster (django-valkey's ClusterValkeyCache
over six redis-servers: 3 primaries, 3 replicas): one slot per record,
round trips counted on the servers, one creator per key per period across
processes, wake-ups and near-cache invalidations by sharded pub/sub."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from django.core.cache import caches

from benchmarks.stampede import keys_on_every_primary, run
from django_dogpile.cache import LOCK_SUFFIX
from django_dogpile.stores.pubsub import hash_tagged
from django_dogpile.testing import another_process
from tests.helpers.procs import make_cache, near_reader_keys

pytestmark = pytest.mark.cluster

SPAWN = multiprocessing.get_context("spawn")


def client():
    return caches["cluster"].client.get_client(write=True)


def slot_of(cache, key, suffix=""):
    return client().keyslot(caches["cluster"].make_key(cache.make_and_validate_key(key) + suffix))


@pytest.mark.parametrize("key", ["plain", "{tagged}by-the-user", "}{", "a}b{c", "é" * 30, 12345])
def test_a_record_its_lease_and_its_hold_share_one_slot(redis_cluster, key):
    cache = make_cache("cluster", "slots", RETRY_AFTER=5, SERVE_STALE_ON_ERROR=True)
    record = slot_of(cache, key)
    assert slot_of(cache, key, LOCK_SUFFIX) == record
    assert slot_of(cache, key, LOCK_SUFFIX + ":retry") == record
    # and every path that touches them together works
    assert cache.get_or_set(key, lambda: "v") == "v"
    cache.invalidate(key)

    def fail():
        raise RuntimeError("down")

    assert cache.get_or_set(key, fail) == "v"  # leaves a retry hold in the slot
    cache.set(key, "w")  # ends it, in one script
    assert cache.get(key) == "w"
    assert cache.delete(key)


def test_hash_tags_keep_a_users_braces_out_of_the_slot():
    assert hash_tagged("p:1:k") == "{p:1:k}"
    tagged = hash_tagged("p:1:{user}k")
    assert tagged.startswith("{h:") and tagged.endswith("p:1:{user}k")


def test_multi_key_methods_span_every_primary(redis_cluster):
    cache = make_cache("cluster", "multi")
    cache.clear()
    keys = keys_on_every_primary("cluster", per_primary=3, prefix="multi")
    nodes = {client().get_node_from_key(cache.store_key(k)).name for k in keys}
    assert len(nodes) == 3
    assert cache.set_many({k: i for i, k in enumerate(keys)}) == []
    assert cache.get_many(keys) == {k: i for i, k in enumerate(keys)}
    cache.delete_many(keys[:3])
    assert set(cache.get_many(keys)) == set(keys[3:])
    cache.clear()  # every primary
    assert cache.get_many(keys) == {}
    assert client().dbsize(target_nodes=client().PRIMARIES) == 0  # summed over the primaries


def _counted(redis_cluster, fn, tag):
    """Client commands every primary received while ``fn`` ran (MONITOR on
    each, script internals left out), summed; and their commandstats."""
    from tests.stores.test_redis import Monitor

    primaries = redis_cluster.primaries()
    monitors = {port: Monitor(port) for port in primaries}
    try:
        for port in primaries:
            redis_cluster.command(port, "ping", f"start-{tag}")
            monitors[port].commands(f"start-{tag}")
        fn()
        total: dict[str, int] = {}
        for port in primaries:
            redis_cluster.command(port, "ping", f"end-{tag}")
            for cmd in monitors[port].commands(f"end-{tag}"):
                if cmd not in ("HELLO", "CLIENT", "CLUSTER", "READONLY"):  # a new connection's set-up
                    total[cmd] = total.get(cmd, 0) + 1
        return total
    finally:
        for monitor in monitors.values():
            monitor.close()


def test_round_trips_are_those_of_one_node(redis_cluster):
    """Counted on the servers (MONITOR on every primary): a fresh hit is 1
    GET; a stale hit while another caller regenerates is GET + a refused
    lease; a regeneration is GET, lease+re-check script, fenced
    write+release script."""
    cache = make_cache("cluster", "trips", LOCK_TIMEOUT=5)
    cache.get_or_set("warm", "w")  # connect, load the scripts
    cache.set("k", "v")
    assert _counted(redis_cluster, lambda: cache.get_or_set("k", "never"), "hit") == {"GET": 1}
    cache.invalidate("k")
    assert _counted(redis_cluster, lambda: cache.get_or_set("k", lambda: "new"), "regen") == {
        "GET": 1,
        "EVALSHA": 2,
    }
    cache.invalidate("k")
    inside, release = threading.Event(), threading.Event()

    def slow():
        inside.set()
        release.wait(5)
        return "slow"

    holder = threading.Thread(target=lambda: cache.get_or_set("k", slow))
    holder.start()
    assert inside.wait(5)
    other = make_cache("cluster", "trips", LOCK_TIMEOUT=5)

    try:
        with another_process():
            assert _counted(redis_cluster, lambda: other.get_or_set("k", "never"), "stale") == {
                "GET": 1,
                "EVALSHA": 1,
            }
    finally:
        release.set()
        holder.join(5)


@pytest.mark.slow
def test_processes_on_keys_of_every_primary_one_creator_per_key_per_period(redis_cluster):
    """4 processes x 4 threads, each caller going round 6 keys (2 per
    primary): one creator call per key per expiry period, never two at
    once; Django's own get_or_set on the same store recomputes per caller."""
    keys = keys_on_every_primary("cluster", per_primary=2)
    duration, timeout, creator = 3.0, 0.5, 0.1
    periods = int(duration / (timeout + creator)) + 1
    common = dict(threads=4, processes=4, duration=duration, timeout=timeout, creator_time=creator)
    dogpile = run("dogpile", "cluster", keys=keys, **common)
    summary = dogpile.per_key_summary()
    print(f"\ncluster 4x4 over {len(keys)} keys: dogpile {summary}, errors {dogpile.errors}")
    assert summary["keys"] == len(keys) and dogpile.errors == 0
    assert summary["max at once per key"] == 1
    assert 2 <= summary["min creator calls per key"] <= summary["max creator calls per key"] <= periods + 1
    plain = run("django", "cluster", keys=keys, **common)
    print(f"cluster 4x4: Django's get_or_set {plain.per_key_summary()}")
    assert plain.per_key_summary()["max creator calls per key"] > 2 * summary["max creator calls per key"]


@pytest.mark.slow
def test_a_write_is_seen_by_every_other_processs_near_cache_within_50_ms(redis_cluster):
    """1 writer and 3 reader processes, 1,000 writes round keys of every
    primary: every read that starts more than 50 ms after a write finished
    returns that write or a later one (sharded pub/sub invalidations)."""
    keys = keys_on_every_primary("cluster", per_primary=1, prefix="near")
    near = {"MAX_ENTRIES": 100, "MAX_BYTES": 1 << 20, "MAX_AGE": 5}
    options = {"LOCK_TIMEOUT": 5, "NEAR_CACHE": near}
    writer = make_cache("cluster", "coherent", **options)
    for key in keys:
        writer.set(key, -1)
    results = SPAWN.Queue()
    start_at = time.time() + 6
    until = start_at + 120
    procs = [
        SPAWN.Process(
            target=near_reader_keys, args=("cluster", "coherent", keys, options, start_at, until, results)
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    writes = []  # (key, value, finished at)
    time.sleep(max(0, start_at + 0.5 - time.time()))
    for i in range(1000):
        key = keys[i % len(keys)]
        writer.set(key, i)
        writes.append((key, i, time.time()))
        time.sleep(0.003)
    for key in keys:
        writer.set(key, "done")
    outs = [results.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(10)
    lags, violations = [], 0
    for changes in outs:
        seen: dict[str, list[tuple[float, float, object]]] = {}
        for key, prev, started, value in changes:
            seen.setdefault(key, []).append((prev, started, value))
        for key, value, finished in writes:
            # the first read of `key` that returned this value or a later one
            later = [
                (p, s) for p, s, v in seen.get(key, []) if v == "done" or (isinstance(v, int) and v >= value)
            ]
            if not later:
                violations += 1
                continue
            prev, started = later[0]
            lag = max(0.0, prev - finished)  # the read before it started after the write
            lags.append(lag)
            if lag > 0.05:
                violations += 1
    lags.sort()
    p99 = lags[int(0.99 * len(lags))]
    print(
        f"\ncluster near cache: {len(lags)} write/reader pairs, p50 {lags[len(lags) // 2] * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms, {violations} over 50 ms"
    )
    assert violations == 0
    assert p99 <= 0.05


def test_check_deploy_asks_the_cluster_and_reports_one_it_cannot_reach(redis_cluster):
    from django.conf import settings
    from django.core.checks import run_checks
    from django.test import override_settings

    assert [m for m in run_checks(include_deployment_checks=True) if m.obj == "dp_cluster"] == []
    gone = {**settings.CACHES["cluster"], "LOCATION": "valkey://127.0.0.1:1"}
    with override_settings(CACHES={**settings.CACHES, "cluster": gone}):
        found = [m.id for m in run_checks(include_deployment_checks=True) if m.obj == "dp_cluster"]
    assert found == ["django_dogpile.W005"]


def test_operations_on_the_cluster(redis_cluster, capsys):
    """manage.py dogpile stats, inspect and invalidate; the Prometheus export."""
    from django.core.management import call_command

    from django_dogpile.engine.shared_stats import publish_now

    cache = caches["dp_cluster"]
    cache.set("report", "v")
    cache.get_or_set("report", "never")
    publish_now()
    call_command("dogpile", "stats", "--alias", "dp_cluster")
    out = capsys.readouterr().out
    assert out.startswith("dp_cluster: ") and "HIT" in out
    call_command("dogpile", "inspect", "report", "--alias", "dp_cluster")
    out = capsys.readouterr().out
    assert "fresh for" in out and "slot" in out and "lease     free" in out
    call_command("dogpile", "invalidate", "report", "--alias", "dp_cluster")
    assert capsys.readouterr().out.strip() == "report: invalidated"
    assert cache.get("report") is None and cache.get_or_set("report", "new") == "new"
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from django_dogpile.prometheus import DogpileCollector

    registry = CollectorRegistry()
    registry.register(DogpileCollector())
    assert 'django_dogpile_events_total{alias="dp_cluster",event="HIT"}' in generate_latest(registry).decode()

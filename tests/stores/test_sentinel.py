"""DogpileCache over django-redis's SentinelClient, through a real failover.

A primary, a replica and a sentinel (quorum 1) run on free loopback ports.
Three processes of four threads per configuration call ``get_or_set`` on a
few keys (freshness 1 s, a creator of 0.1 s); then the primary is killed
with SIGKILL and the sentinel promotes the replica.  The rules checked:

* callers see errors only inside the failover window, and none at all when
  the store has ``IGNORE_EXCEPTIONS``;
* no caller is stuck: every call returns within a bound;
* no lease outlives ``LOCK_TIMEOUT`` on the new primary, and none is left
  once the load stops;
* after the window each key is again regenerated once per expiry period
  (one more is allowed in the period that straddles the failover).

Run with ``-s`` to see the window and the counts.

The same situation without a sentinel: a primary down while its replica
still answers reads (django-redis reads from replicas) must not turn an
``IGNORE_EXCEPTIONS`` outage into a regeneration on every call.

Django's own RedisCache is not run under Sentinel here: it builds its pool
with ``pool_class.from_url(LOCATION, **OPTIONS)``, a fixed address.  It
follows Sentinel only when OPTIONS name redis-py's ``SentinelConnectionPool``
as ``pool_class`` and carry ``service_name`` and a live ``Sentinel`` object
(that works when tried by hand; it is not a configuration this suite tests).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from redis.sentinel import MasterNotFoundError, Sentinel

from django_dogpile.cache import LOCK_SUFFIX
from django_dogpile.testing import Clock
from tests.helpers import failover
from tests.helpers.procs import failover_load, make_cache
from tests.helpers.redis_server import RedisServer, SentinelServer, required, sentinel_command

pytestmark = pytest.mark.redis

SPAWN = multiprocessing.get_context("spawn")
SERVICE = "mymaster"

TIMEOUT = 1.0  # freshness: one regeneration per key per second
CREATE = 0.1  # what the creator takes
LOCK_TIMEOUT = 2.0
OPTIONS = {"GRACE": 30, "LOCK_TIMEOUT": LOCK_TIMEOUT}
KEYS = ["a", "b", "c"]
PROCESSES, THREADS = 3, 4
WARM = 3.5  # load before the kill
AFTER = 6.0  # load once the clients are on the new primary
#: (tag, store alias, OPTIONS): the same load over both failure policies
CONFIGS = [
    ("strict", "sentinel", OPTIONS),
    ("ignore", "sentinel_ignore", OPTIONS),  # the store has IGNORE_EXCEPTIONS
]


def _wait(what: str, done: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := done():
            return result
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def _replica_of(primary: RedisServer) -> RedisServer:
    """A replica of ``primary``, started, its first sync done."""
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(primary.port)))
    try:
        replica.start()
        link = redis.Redis(port=replica.port)
        try:
            _wait("the replica's link", lambda: link.info("replication").get("master_link_status") == "up")
        finally:
            link.close()
    except BaseException:
        replica.cleanup()
        raise
    return replica


@pytest.fixture(scope="module")
def cluster(redis_server) -> Iterator[SimpleNamespace]:
    """Primary, replica and sentinel; the sentinel's port in the environment
    (read by tests.settings in every worker process started after this)."""
    # (redis_server: no redis-server is a skip there, or a usage error in CI)
    if sentinel_command() is None:
        if required():
            pytest.fail("redis-sentinel is required here (CI) but not installed")
        pytest.skip("redis-sentinel is not installed")
    # no 5 s pause before the replica's first full sync
    primary = RedisServer(args=("--repl-diskless-sync-delay", "0"))
    servers: list[Any] = [primary]
    saved = os.environ.get("DOGPILE_TEST_SENTINEL_PORT")
    try:
        primary.start()
        replica = _replica_of(primary)
        servers.append(replica)
        sentinel = SentinelServer(primary.port, SERVICE)
        servers.append(sentinel)
        sentinel.start()
        admin = redis.Redis(port=sentinel.port, decode_responses=True)

        def replica_known() -> bool:
            # the sentinel has read the replica's INFO and seen its link up:
            # it can be promoted as soon as the primary is down
            return any(
                str(r.get("master-link-status")) == "ok" and int(r.get("info-refresh") or 0) > 0
                for r in admin.sentinel_slaves(SERVICE)
            )

        _wait("the sentinel to know the replica", replica_known)
        admin.close()
        os.environ["DOGPILE_TEST_SENTINEL_PORT"] = str(sentinel.port)
        yield SimpleNamespace(primary=primary, replica=replica, sentinel=sentinel)
    finally:
        if saved is None:
            os.environ.pop("DOGPILE_TEST_SENTINEL_PORT", None)
        else:
            os.environ["DOGPILE_TEST_SENTINEL_PORT"] = saved
        for server in reversed(servers):
            server.cleanup()


def replicated(primary: RedisServer, replica: RedisServer) -> Any:
    """Settings with a "replicated" django-redis store whose reads go to the replica."""
    store = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": [primary.url, replica.url],
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 1, "IGNORE_EXCEPTIONS": True},
    }
    return override_settings(CACHES={**settings.CACHES, "replicated": store})


@pytest.fixture
def primary_and_replica(redis_server) -> Iterator[tuple[RedisServer, RedisServer]]:
    # no 5 s pause before the replica's first full sync
    primary = RedisServer(args=("--repl-diskless-sync-delay", "0"))
    servers = [primary]
    try:
        primary.start()
        servers.append(_replica_of(primary))
        yield primary, servers[1]
    finally:
        for server in servers:
            server.cleanup()


def test_outage_with_a_readable_replica_shares_one_computation(primary_and_replica):
    """The primary is down, its replica still serves the stale record: with
    IGNORE_EXCEPTIONS this process computes the value once per freshness
    period and serves that, as when the whole store is down."""
    primary, replica = primary_and_replica
    calls = []

    def make():
        calls.append(1)
        return f"computed {len(calls)}"

    with replicated(primary, replica):
        cache = make_cache("replicated", "rep", 10, LOCK_TIMEOUT=5)
        with Clock() as clock:
            assert cache.get_or_set("k", make) == "computed 1"
            primary_client = redis.Redis(port=primary.port)
            assert primary_client.wait(1, 2000) == 1  # the replica has the record
            primary_client.close()
            clock.advance(11)  # stale now, still servable (GRACE)
            primary.kill()
            got = [cache.get_or_set("k", make) for _ in range(5)]
            assert got == ["computed 2"] * 5 and len(calls) == 2
            clock.advance(11)  # that value's freshness is over: once more
            got = [cache.get_or_set("k", make) for _ in range(3)]
            assert got == ["computed 3"] * 3 and len(calls) == 3


def test_outage_with_a_readable_replica_and_background_starts_one_job(primary_and_replica):
    """As above with BACKGROUND: callers are served stale while one pool job
    computes the value; later calls start no job of their own (10 calls
    started 10 jobs before)."""
    primary, replica = primary_and_replica
    calls = []

    def make():
        calls.append(1)
        return f"computed {len(calls)}"

    with replicated(primary, replica):
        cache = make_cache("replicated", "repbg", 10, LOCK_TIMEOUT=5, BACKGROUND=True)
        with Clock() as clock:
            assert cache.get_or_set("k", make) == "computed 1"
            primary_client = redis.Redis(port=primary.port)
            assert primary_client.wait(1, 2000) == 1
            primary_client.close()
            clock.advance(11)
            primary.kill()
            assert cache.get_or_set("k", make) == "computed 1"  # stale; a job starts
            deadline = time.monotonic() + 5
            while len(calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            got = [cache.get_or_set("k", make) for _ in range(10)]
            time.sleep(0.3)  # any job these started would have run by now
            assert len(calls) == 2, got


def _window(answers: list[tuple]) -> tuple[float, float] | None:
    return failover.window(answers)


def _per_period(times: list[float], start: float, end: float) -> list[int]:
    return failover.per_period(times, start, end, TIMEOUT)


@pytest.mark.slow
def test_failover_under_load(cluster, tmp_path):
    log_path = str(tmp_path / "creations.log")
    ready, results = SPAWN.Queue(), SPAWN.Queue()
    go, stop = SPAWN.Event(), SPAWN.Event()
    procs = [
        SPAWN.Process(
            target=failover_load,
            args=(CONFIGS, KEYS, THREADS, TIMEOUT, CREATE, log_path, ready, go, stop, results),
            daemon=True,
        )
        for _ in range(PROCESSES)
    ]
    sentinels = Sentinel([("127.0.0.1", cluster.sentinel.port)], socket_timeout=0.5)
    old = ("127.0.0.1", cluster.primary.port)
    pattern = f"*{LOCK_SUFFIX}*"
    lease_pttls: list[int] = []
    outlived: list[tuple[str, int]] = []
    answers: dict[str, list[tuple]] = defaultdict(list)
    warnings: Counter[str] = Counter()
    per_process: list[list[tuple[str, str]]] = []
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)  # Django imported, threads waiting
        t_go = time.time()
        go.set()
        time.sleep(WARM)

        t_kill = time.time()
        cluster.primary.kill()

        def new_primary() -> tuple[str, int] | None:
            try:
                address = sentinels.discover_master(SERVICE)
            except MasterNotFoundError:  # sdown, or the failover is running
                return None
            return address if tuple(address) != old else None

        try:
            address = _wait("the sentinel to promote the replica", new_primary, 20)
        except RuntimeError:
            pytest.fail("no failover; the sentinel's log:\n" + cluster.sentinel.log_tail())
        t_switch = time.time()
        assert address[1] == cluster.replica.port
        store = redis.Redis(*address, decode_responses=True)
        # Every lease on the new primary (the replicated ones first) must
        # run out within LOCK_TIMEOUT of now: a PTTL of -1 would be forever.
        while time.time() < t_switch + AFTER:
            for key in store.scan_iter(match=pattern, count=1000):
                pttl = store.pttl(key)
                if pttl == -2:
                    continue  # released between SCAN and PTTL
                lease_pttls.append(pttl)
                if pttl == -1 or pttl > LOCK_TIMEOUT * 1000:
                    outlived.append((key, pttl))
            time.sleep(0.1)
        t_stop = time.time()
        stop.set()
        for _ in procs:
            try:
                out, logged = results.get(timeout=30)
            except Exception:
                pytest.fail("a worker's caller is stuck: no answer 30 s after the stop")
            for tag, got in out.items():
                answers[tag].extend(got)
            per_process.append(logged)
            warnings.update(line for _, line in logged)
        for p in procs:
            p.join(10)
    finally:
        go.set()
        stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    time.sleep(LOCK_TIMEOUT + 0.2)
    left = {key: store.pttl(key) for key in store.scan_iter(match=pattern)}
    store.close()

    with open(log_path) as f:
        creations: dict[tuple[str, str], list[float]] = defaultdict(list)
        for line in f:
            t, tag, key, _pid = line.split()
            creations[tag, key].append(float(t))

    strict = answers["strict"]
    window = _window(strict)
    assert window is not None, "the strict configuration saw no error: was the primary killed?"
    w_start, w_end = window
    back = max(w_end, t_switch)  # both configurations are on the new primary
    problems = {tag: Counter(a[3][:90] for a in got if a[3]) for tag, got in answers.items()}
    slowest = {tag: max(a[1] - a[0] for a in got) for tag, got in answers.items()}
    report = [
        f"failover: sentinel switched {1000 * (t_switch - t_kill):.0f} ms after the kill; "
        f"strict window {1000 * (w_end - w_start):.0f} ms "
        f"(the first failing call started {1000 * (w_start - t_kill):+.0f} ms from the kill)",
        f"leases on the new primary: {len(lease_pttls)} seen, max PTTL "
        f"{max(lease_pttls, default=0)} ms (LOCK_TIMEOUT {LOCK_TIMEOUT * 1000:.0f} ms); left at the end: {left}",
        f"warnings logged by the workers: {dict(warnings)}",
    ]
    for tag, got in sorted(answers.items()):
        report.append(
            f"{tag}: {len(got)} calls, {sum(problems[tag].values())} errors, slowest "
            f"{1000 * slowest[tag]:.0f} ms; {dict(problems[tag]) or ''}"
        )
        for key in KEYS:
            times = creations[tag, key]
            report.append(
                f"  {key}: per period before the kill "
                f"{_per_period(times, t_go, t_kill)}, during the outage "
                f"{sum(t_kill <= t < back for t in times)}, per period after "
                f"{_per_period(times, back, t_stop)}"
            )
    print("\n" + "\n".join(report))

    # readable logs: per process, at most 5 warning lines per alias for the
    # failover, the first naming the cause (django_dogpile.degraded)
    for logged in per_process:
        assert all(alias != "?" for alias, _ in logged), logged  # each one aggregated
        lines = Counter(alias for alias, _ in logged)
        assert all(n <= 5 for n in lines.values()), (lines, logged)
        firsts = [line for _, line in logged if "[repeats summarised" in line]
        assert firsts and all("(" in line for line in firsts), logged  # each names its cause
    assert any("lock store unavailable (" in line for line in warnings), warnings  # with the error
    # errors only inside the window, only store errors, none with IGNORE_EXCEPTIONS
    assert not problems["ignore"], problems["ignore"]
    assert all(p.startswith("store error") for p in problems["strict"]), problems["strict"]
    assert all(a[1] >= t_kill for a in strict if a[3]), "an error before the primary died"
    assert w_end - w_start < 10, report[0]
    # no caller stuck: LOCK_TIMEOUT (a waiter's bound) plus two socket timeouts
    assert max(slowest.values()) < LOCK_TIMEOUT + 2 + 1, slowest
    # no lease outlives LOCK_TIMEOUT
    assert not outlived, outlived
    assert not left, left
    # during the outage: with IGNORE_EXCEPTIONS, one computation per key per
    # period in each process (the replica still serves the stale record)
    periods = math.ceil((back - t_kill) / TIMEOUT) + 1
    for key in KEYS:
        during = sum(t_kill <= t < back for t in creations["ignore", key])
        assert during <= PROCESSES * periods, (key, during, report)
    # one regeneration per key per expiry period, before and after the failover
    for tag, _, _ in CONFIGS:
        for key in KEYS:
            times = creations[tag, key]
            before = _per_period(times, t_go, t_kill)
            assert max(before) == 1, (tag, key, before)
            after = _per_period(times, back, t_stop)
            assert after[0] <= 2 and max(after[1:]) <= 1, (tag, key, after)
            assert sum(after) >= len(after) // 2, (tag, key, after)  # still regenerated

"""A Redis Cluster that loses a primary, and one whose hot slots move, under
load from real processes (a cluster of their own: these tests kill and move).

Failover: 2 processes x 3 threads per configuration (strict, and django-
valkey's IGNORE_EXCEPTIONS) call get_or_set round keys on every primary
(TIMEOUT 1 s, a 0.1 s creator); the primary of one key is SIGKILLed and its
replica takes over.  Errors reach callers only inside the failover window,
and none with IGNORE_EXCEPTIONS; no call hangs; no lease outlives
LOCK_TIMEOUT; after the window at most one regeneration per key per period.

Reshard: the slots that hold the hot keys move to another primary with
``redis-cli --cluster reshard`` while the load runs: no errors, at most one
extra regeneration per moved key, the lease moving with its record.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from django_dogpile.cache import LOCK_SUFFIX
from tests.helpers import failover
from tests.helpers.procs import failover_load, make_cache
from tests.helpers.redis_server import RedisClusterServers

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT, CREATE, LOCK_TIMEOUT = 1.0, 0.1, 2.0
OPTIONS = {"GRACE": 30, "LOCK_TIMEOUT": LOCK_TIMEOUT}
CONFIGS = [("strict", "cluster_own", OPTIONS), ("ignore", "cluster_own_ignore", OPTIONS)]
PROCESSES, THREADS = 2, 3
WARM, AFTER = 3.0, 5.0


@pytest.fixture
def own_cluster(redis_cluster):
    cluster = RedisClusterServers()
    cluster.start()
    os.environ["DOGPILE_TEST_CLUSTER_OWN"] = cluster.location  # for the worker processes
    own = {
        alias: {**settings.CACHES[alias], "LOCATION": cluster.location}
        for alias in ("cluster_own", "cluster_own_ignore")
    }
    try:
        with override_settings(CACHES={**settings.CACHES, **own}):
            yield cluster
    finally:
        cluster.cleanup()


def _node_of(tag: str, location: str, key: str) -> str:
    cache = make_cache(location, tag, TIMEOUT, **OPTIONS)
    client = caches[location].client.get_client(write=True)
    return client.get_node_from_key(cache.store_key(key)).name


def _keys_on_every_primary(cluster: RedisClusterServers) -> list[str]:
    """Keys that, for every configuration, land on every primary."""
    primaries = {f"127.0.0.1:{p}" for p in cluster.primaries()}
    keys: list[str] = []
    covered: dict[str, set[str]] = defaultdict(set)
    while any(covered[tag] != primaries for tag, _, _ in CONFIGS) or len(keys) < 3:
        key = uuid.uuid4().hex[:6]
        nodes = {tag: _node_of(tag, location, key) for tag, location, _ in CONFIGS}
        if any(nodes[tag] not in covered[tag] for tag in nodes):
            keys.append(key)
            for tag, node in nodes.items():
                covered[tag].add(node)
    return keys


def _window(answers: list[tuple]) -> tuple[float, float] | None:
    return failover.window(answers)


def _per_period(times: list[float], start: float, end: float) -> list[int]:
    return failover.per_period(times, start, end, TIMEOUT)


class _Load:
    """The worker processes of one run."""

    def __init__(self, keys: list[str], log_path: str, configs: list[Any] = CONFIGS) -> None:
        self.ready, self.results = SPAWN.Queue(), SPAWN.Queue()
        self.go, self.stop = SPAWN.Event(), SPAWN.Event()
        self.log_path = log_path
        self.procs = [
            SPAWN.Process(
                target=failover_load,
                args=(
                    configs,
                    keys,
                    THREADS,
                    TIMEOUT,
                    CREATE,
                    log_path,
                    self.ready,
                    self.go,
                    self.stop,
                    self.results,
                ),
                daemon=True,
            )
            for _ in range(PROCESSES)
        ]
        self.answers: dict[str, list[tuple]] = defaultdict(list)
        self.warnings: Counter[str] = Counter()

    def start(self) -> float:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.ready.get(timeout=60)
        self.go.set()
        return time.time()

    def finish(self) -> None:
        self.stop.set()
        try:
            for _ in self.procs:
                try:
                    out, logged = self.results.get(timeout=30)
                except Exception:
                    pytest.fail("a worker's caller is stuck: no answer 30 s after the stop")
                for tag, got in out.items():
                    self.answers[tag].extend(got)
                self.warnings.update(logged)
        finally:
            for p in self.procs:
                p.join(10)
                if p.is_alive():
                    p.kill()

    def creations(self) -> dict[tuple[str, str], list[float]]:
        found: dict[tuple[str, str], list[float]] = defaultdict(list)
        with open(self.log_path) as f:
            for line in f:
                t, tag, key, _pid = line.split()
                found[tag, key].append(float(t))
        return found


def _leases(cluster: RedisClusterServers) -> list[tuple[str, int]]:
    """(lock key, PTTL) of every lease on the live primaries."""
    found = []
    for port in cluster.primaries():
        keys = cluster.command(port, "--scan", "--pattern", f"*{LOCK_SUFFIX}").split()
        for key in keys:
            if key.endswith(":retry"):
                continue
            pttl = int(cluster.command(port, "pttl", key).strip() or -2)
            if pttl != -2:
                found.append((key, pttl))
    return found


def test_a_primary_killed_under_load_fails_over_within_a_bounded_window(own_cluster, tmp_path):
    cluster = own_cluster
    keys = _keys_on_every_primary(cluster)
    victim_name = _node_of("strict", "cluster_own", keys[0])
    victim = next(n for n in cluster.nodes if f"127.0.0.1:{n.port}" == victim_name)
    load = _Load(keys, str(tmp_path / "creations.log"))
    outlived: list[tuple[str, int]] = []
    seen_pttls: list[int] = []
    try:
        t_go = load.start()
        time.sleep(WARM)
        t_kill = time.time()
        victim.kill()
        cluster.wait_failover(victim.port)  # its replica took over its slots
        t_switch = time.time()
        while time.time() < t_switch + AFTER:
            for key, pttl in _leases(cluster):
                seen_pttls.append(pttl)
                if pttl == -1 or pttl > LOCK_TIMEOUT * 1000:
                    outlived.append((key, pttl))
            time.sleep(0.1)
        t_stop = time.time()
    finally:
        load.finish()
    time.sleep(LOCK_TIMEOUT + 0.2)
    left = _leases(cluster)
    creations = load.creations()

    answers = load.answers
    problems = {tag: Counter(a[3][:100] for a in got if a[3]) for tag, got in answers.items()}
    slowest = {tag: max(a[1] - a[0] for a in got) for tag, got in answers.items()}
    window = _window(answers["strict"])
    w_start, w_end = window if window else (t_kill, t_kill)
    back = max(w_end, t_switch)
    report = [
        f"cluster failover: replica took over {1000 * (t_switch - t_kill):.0f} ms after the SIGKILL; "
        f"strict error window {1000 * (w_end - w_start):.0f} ms",
        f"leases seen on the primaries after the switch: {len(seen_pttls)}, max PTTL "
        f"{max(seen_pttls, default=0)} ms (LOCK_TIMEOUT {LOCK_TIMEOUT * 1000:.0f}); left at the end: {left}",
        f"warnings logged by the workers: {dict(load.warnings)}",
    ]
    for tag, got in sorted(answers.items()):
        report.append(
            f"{tag}: {len(got)} calls, {sum(problems[tag].values())} errors, slowest "
            f"{1000 * slowest[tag]:.0f} ms; {dict(problems[tag]) or ''}"
        )
        for key in keys:
            times = creations[tag, key]
            on_victim = " (on the killed primary)" if _node_of(tag, CONFIGS[0][1], key) == victim_name else ""
            report.append(
                f"  {key}{on_victim}: per period before {_per_period(times, t_go, t_kill)}, during "
                f"{sum(t_kill <= t < back for t in times)}, after {_per_period(times, back, t_stop)}"
            )
    print("\n" + "\n".join(report))

    assert not problems["ignore"], problems["ignore"]
    assert all(p.startswith("store error") for p in problems["strict"]), problems["strict"]
    assert all(a[1] >= t_kill for a in answers["strict"] if a[3]), "an error before the primary died"
    assert w_end - w_start < 10, report[0]
    assert max(slowest.values()) < LOCK_TIMEOUT + 2 * 1 + 3, slowest  # no caller hangs
    assert not outlived and not left, (outlived, left)
    periods = math.ceil((back - t_kill) / TIMEOUT) + 1
    for key in keys:  # during the outage: one computation per key per period per process
        assert sum(t_kill <= t < back for t in creations["ignore", key]) <= PROCESSES * periods, report
    for tag, _, _ in CONFIGS:
        for key in keys:
            times = creations[tag, key]
            assert max(_per_period(times, t_go, t_kill)) == 1, (tag, key, report)
            after = _per_period(times, back, t_stop)
            assert after[0] <= 2 and max(after[1:], default=0) <= 1, (tag, key, after)


def _hot_keys_in_first_slots(cluster: RedisClusterServers, source: int, slots: int, n: int) -> list[str]:
    """``n`` keys (for the strict configuration) whose slots are among the
    first ``slots`` of primary ``source``: those ``redis-cli --cluster
    reshard`` moves first."""
    client = caches["cluster_own"].client.get_client(write=True)
    client.nodes_manager.initialize()
    first = min(slot for slot, nodes in client.nodes_manager.slots_cache.items() if nodes[0].port == source)
    owned = range(first, first + slots)
    cache = make_cache("cluster_own", "strict", TIMEOUT, **OPTIONS)
    keys: list[str] = []
    while len(keys) < n:
        key = uuid.uuid4().hex[:8]
        if client.keyslot(caches["cluster_own"].make_key(cache.make_and_validate_key(key))) in owned:
            keys.append(key)
    return keys


def _node_id(cluster: RedisClusterServers, port: int) -> str:
    line = next(row for row in cluster.command(port, "cluster", "nodes").splitlines() if "myself" in row)
    return line.split()[0]


def test_hot_slots_moved_under_load_cost_no_error(own_cluster, tmp_path):
    cluster = own_cluster
    source, target = cluster.primaries()[:2]
    moved = 200
    keys = _hot_keys_in_first_slots(cluster, source, moved, 4)
    load = _Load(keys, str(tmp_path / "creations.log"), configs=[CONFIGS[0]])
    cli = [
        "redis-cli",
        "--cluster",
        "reshard",
        f"127.0.0.1:{source}",
        "--cluster-from",
        _node_id(cluster, source),
        "--cluster-to",
        _node_id(cluster, target),
        "--cluster-slots",
        str(moved),
        "--cluster-yes",
        "--cluster-pipeline",
        "10",
    ]
    try:
        t_go = load.start()
        time.sleep(WARM)
        t_move = time.time()
        done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
        t_moved = time.time()
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        cluster.wait_ok(timeout=30)
        time.sleep(AFTER)
        t_stop = time.time()
    finally:
        load.finish()
    creations = load.creations()
    client = caches["cluster_own"].client.get_client(write=True)
    client.nodes_manager.initialize()
    cache = make_cache("cluster_own", "strict", TIMEOUT, **OPTIONS)
    now_on = {client.get_node_from_key(cache.store_key(k)).port for k in keys}
    got = load.answers["strict"]
    problems = Counter(a[3][:100] for a in got if a[3])
    periods = math.ceil((t_moved - t_move) / TIMEOUT) + 1
    report = [
        f"cluster reshard of {moved} slots (4 hot keys) {source} -> {target}: "
        f"{1000 * (t_moved - t_move):.0f} ms; {len(got)} calls, {sum(problems.values())} errors "
        f"{dict(problems) or ''}; the keys now on {sorted(now_on)}"
    ]
    for key in keys:
        times = creations["strict", key]
        report.append(
            f"  {key}: per period before {_per_period(times, t_go, t_move)}, during the move "
            f"{sum(t_move <= t < t_moved for t in times)} ({periods} periods), after "
            f"{_per_period(times, t_moved, t_stop)}"
        )
    print("\n" + "\n".join(report))
    assert now_on == {target}, report
    assert not problems, report
    for key in keys:
        times = creations["strict", key]
        assert max(_per_period(times, t_go, t_move)) == 1, report
        assert sum(t_move <= t < t_moved for t in times) <= periods + 1, report  # at most one extra
        after = _per_period(times, t_moved, t_stop)
        assert after[0] <= 2 and max(after[1:], default=0) <= 1, report


def _move_slot(cluster: RedisClusterServers, slot: int, source: int, target: int) -> None:
    """Migrate one slot, keys and all, as redis-cli --cluster reshard does."""
    source_id, target_id = _node_id(cluster, source), _node_id(cluster, target)
    cluster.command(target, "cluster", "setslot", str(slot), "importing", source_id)
    cluster.command(source, "cluster", "setslot", str(slot), "migrating", target_id)
    while keys := cluster.command(source, "cluster", "getkeysinslot", str(slot), "100").split():
        cluster.command(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", *keys)
    for port in [target, source] + [p for p in cluster.primaries() if p not in (source, target)]:
        cluster.command(port, "cluster", "setslot", str(slot), "node", target_id)
    cluster.wait_ok()


def _seen_within(cache, key, value, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cache.get(key) == value:
            return True
        time.sleep(0.002)
    return cache.get(key) == value


def test_the_near_cache_listener_follows_its_channel_through_a_move_and_a_failover(own_cluster):
    """The sharded invalidation channel's slot is moved to another primary,
    then that primary is SIGKILLed: each time the listener resubscribes where
    the slot is served (bypassing the near cache meanwhile), and another
    process's writes are seen within 50 ms once it has."""
    from django_dogpile.stores.near import NearStore
    from tests.helpers.procs import near_writer

    cluster = own_cluster
    near = {"MAX_ENTRIES": 100, "MAX_BYTES": 1 << 20, "MAX_AGE": 30}
    options = {"LOCK_TIMEOUT": 5, "NEAR_CACHE": near}
    reader = make_cache("cluster_own", "follow", 300, **options)
    reader.get("connect")
    assert isinstance(reader.store, NearStore)
    bus = reader.store._bus
    assert bus.subscribed.wait(10)
    commands, acks = SPAWN.Queue(), SPAWN.Queue()
    writer = SPAWN.Process(
        target=near_writer, args=("cluster_own", "follow", options, commands, acks), daemon=True
    )
    writer.start()
    assert acks.get(timeout=60) == "ready"
    client = caches["cluster_own"].client.get_client(write=True)

    def write_and_see(value, bound):
        reader.get("k")  # keep a near copy
        reader.get("k")
        commands.put(("k", value))
        acks.get(timeout=30)
        return _seen_within(reader, "k", value, bound)

    def resubscribed(timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if bus.subscribed.is_set() and reader.store._near.ready:
                return True
            time.sleep(0.01)
        return False

    try:
        assert write_and_see(1, 0.05)
        channel_slot = client.keyslot(bus.channel)
        client.nodes_manager.initialize()
        owner = client.nodes_manager.slots_cache[channel_slot][0].port
        target = next(p for p in cluster.primaries() if p != owner)
        _move_slot(cluster, channel_slot, owner, target)
        assert write_and_see(2, 2.0)  # bypassed or resubscribed: never the old value for long
        assert resubscribed()
        assert write_and_see(3, 0.05)
        victim = next(n for n in cluster.nodes if n.port == target)
        victim.kill()
        cluster.wait_failover(target)
        assert resubscribed(30), "the listener did not come back after the failover"
        assert write_and_see(4, 0.05)
    finally:
        commands.put(None)
        writer.join(10)
        if writer.is_alive():
            writer.kill()

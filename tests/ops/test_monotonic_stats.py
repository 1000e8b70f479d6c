"""The shared counters across real worker processes on a real Redis: the
``_total`` counters never go down when a worker exits (cleanly or killed
with SIGKILL), and a process that only reads is not counted."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import signal
import socket
import time

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.test import RequestFactory, override_settings

from django_dogpile.stats import COUNTERS
from tests.helpers.stats_workers import INTERVAL, read_stats, serve
from tests.helpers.stores import stores

SPAWN = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.slow

ALIAS = "dp_counted"
CONFIG = {
    "BACKEND": "django_dogpile.cache.DogpileCache",
    "LOCATION": "redis",
    "TIMEOUT": 300,
    "KEY_PREFIX": "counted",
    "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
}
#: no publish for this long and a record is folded (6 intervals)
QUIET = 6 * INTERVAL


def _name(pid):
    return f"{socket.gethostname()}.{pid}"


def _metrics(text, alias=ALIAS):
    events = {
        name: float(
            re.search(rf'django_dogpile_events_total{{alias="{alias}",event="{name}"}} (\S+)', text)[1]
        )
        for name in COUNTERS
    }
    processes = float(re.search(rf'django_dogpile_processes{{alias="{alias}"}} (\S+)', text)[1])
    return events, processes


class Readings:
    """Every read of the counters, through ``dogpile stats --json`` and the
    Prometheus view in turn; each must be >= the one before, counter by
    counter."""

    def __init__(self):
        from django_dogpile.prometheus import metrics_view

        self.view = metrics_view
        self.last = dict.fromkeys(COUNTERS, 0)
        self.count = 0

    def _check(self, source, total):
        down = {k: (self.last[k], total[k]) for k in COUNTERS if total[k] < self.last[k]}
        assert not down, f"{source} reading {self.count}: went down (before, now): {down}"
        self.last = dict(total)
        self.count += 1

    def read(self):
        out = io.StringIO()
        call_command("dogpile", "stats", "--alias", ALIAS, "--json", stdout=out)
        data = json.loads(out.getvalue())
        self._check("dogpile stats --json", data["total"])
        events, processes = _metrics(self.view(RequestFactory().get("/metrics")).content.decode())
        self._check("metrics_view", {k: int(v) for k, v in events.items()})
        return data, processes

    def until(self, done, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            data, processes = self.read()
            if done(data, processes):
                return data, processes
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s: {data}"
            time.sleep(0.05)


def _summed(*rows):
    return {k: sum(r[k] for r in rows) for k in COUNTERS}


@pytest.fixture
def counted():
    """Only the aliases these tests read (a scrape reads every alias), the
    store cleared, counters published every 0.2 s in this process too."""
    pytest.importorskip("prometheus_client")
    only = {"default": settings.CACHES["default"], "redis": settings.CACHES["redis"], ALIAS: CONFIG}
    with override_settings(CACHES=only, DOGPILE={"STATS_INTERVAL": INTERVAL}):
        caches["redis"].clear()
        yield


def _start(hits, pace, results):
    commands = SPAWN.Queue()
    p = SPAWN.Process(target=serve, args=(ALIAS, CONFIG, hits, pace, commands, results))
    p.start()
    return p, commands


@pytest.mark.redis
def test_totals_never_go_down_when_workers_exit_or_are_killed(counted):
    results = SPAWN.Queue()
    a, a_commands = _start(40, 0, results)  # to be killed with SIGKILL (the queue kept for the child)
    b, b_commands = _start(60, 0, results)  # to exit cleanly
    c, c_commands = _start(20, 0.01, results)  # serves on throughout
    workers = {}
    try:
        for _ in range(3):
            word, pid, stats = results.get(timeout=60)
            assert word == "ready"
            workers[pid] = stats
        readings = Readings()
        names = {p: _name(p.pid) for p in (a, b, c)}
        # all three publish; this process, which only reads, is not one of them
        data, processes = readings.until(
            lambda d, n: set(d["processes"]) == set(names.values()) and n == 3, 30, "three processes"
        )

        # b exits cleanly: it folds its own record at exit, no keep period
        b_commands.put("exit")
        word, _pid, b_final = results.get(timeout=30)
        assert word == "exit"
        b.join(30)
        data, processes = readings.read()
        assert names[b] not in data["processes"], "b's record was not folded at exit"
        assert all(data["retired"][k] >= b_final[k] for k in COUNTERS), (data, b_final)
        assert data["total"]["HIT"] >= workers[a.pid]["HIT"] + b_final["HIT"]

        # a is killed: no atexit; c folds a's record once it is quiet
        os.kill(a.pid, signal.SIGKILL)
        a.join(30)
        killed = time.monotonic()
        data, processes = readings.until(
            lambda d, n: names[a] not in d["processes"] and n == 1, 10 * QUIET + 10, "a folded"
        )
        assert time.monotonic() - killed >= QUIET * 0.5  # folded for being quiet, not at once
        folded = _summed(workers[a.pid], b_final)
        assert all(data["retired"][k] >= folded[k] for k in COUNTERS), data

        # c exits cleanly last: its fold at exit leaves the exact sum
        c_commands.put("exit")
        word, _pid, c_final = results.get(timeout=30)
        c.join(30)
        expected = _summed(workers[a.pid], b_final, c_final)
        data, processes = readings.read()
        assert data["processes"] == {} and processes == 0, data
        assert data["total"] == data["retired"] == expected
        # and so it stays, past the keep period
        end = time.monotonic() + QUIET + 0.5
        while time.monotonic() < end:
            data, processes = readings.read()
            assert data["total"] == expected
        assert readings.count > 20
    finally:
        for p in (a, b, c):
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)


@pytest.mark.redis
def test_a_process_that_only_reads_is_not_counted(counted):
    results = SPAWN.Queue()
    workers = [_start(5, 0, results) for _ in range(2)]
    try:
        pids = {results.get(timeout=60)[1] for _ in workers}
        Readings().until(lambda d, n: n == 2, 30, "two processes")
        got = SPAWN.Queue()
        reader = SPAWN.Process(target=read_stats, args=(ALIAS, CONFIG, got))
        reader.start()
        reader_pid, data, text = got.get(timeout=60)
        reader.join(30)
        events, processes = _metrics(text)
        assert processes == 2 and len(data["processes"]) == 2, (data, text)
        assert set(data["processes"]) == {_name(pid) for pid in pids}
        assert _name(reader_pid) not in data["processes"]
        assert events["HIT"] == data["total"]["HIT"]
        assert sum(data["total"][k] for k in ("HIT", "MISS", "UPDATING")) == 10  # 2 x 5 calls
        # nor does it appear later: it published no record
        data, processes = Readings().read()
        assert processes == 2 and _name(reader_pid) not in data["processes"]
    finally:
        for p, commands in workers:
            commands.put("exit")
            p.join(30)


@pytest.mark.parametrize("location", stores("redis", "cluster", "memcached", "db", "file"))
def test_readers_folding_at_once_count_each_killed_worker_once(location):
    """Workers killed with SIGKILL; once their records are quiet, three
    reading processes fold them at the same instant: each answers the exact
    sum (no record counted twice, none lost), on every shared store."""
    pytest.importorskip("prometheus_client")
    config = {**CONFIG, "LOCATION": location}
    only = {"default": settings.CACHES["default"], location: settings.CACHES[location], ALIAS: config}
    with override_settings(CACHES=only, DOGPILE={"STATS_INTERVAL": INTERVAL}):
        caches[location].clear()
        results = SPAWN.Queue()
        workers = []
        for hits in (7, 11, 13):
            commands = SPAWN.Queue()
            p = SPAWN.Process(target=serve, args=(ALIAS, config, hits, 0, commands, results))
            p.start()
            workers.append((p, commands))
        try:
            counted = [results.get(timeout=60)[2] for _ in workers]
            Readings().until(lambda d, n: n == 3, 30, "three processes")
        finally:
            for p, _ in workers:
                os.kill(p.pid, signal.SIGKILL)
                p.join(10)
        expected = _summed(*counted)
        assert sum(expected[k] for k in ("HIT", "MISS", "UPDATING")) == 31
        got = SPAWN.Queue()
        at = time.time() + QUIET + 3  # after their setup, and the records quiet
        readers = [SPAWN.Process(target=read_stats, args=(ALIAS, config, got, at)) for _ in range(3)]
        for r in readers:
            r.start()
        answers = [got.get(timeout=60) for _ in readers]
        for r in readers:
            r.join(30)
        for _pid, data, text in answers:
            events, processes = _metrics(text)
            assert data["total"] == expected and data["processes"] == {}, data
            assert {k: int(v) for k, v in events.items()} == expected and processes == 0
        data, _ = Readings().read()
        assert data["total"] == data["retired"] == expected


@pytest.mark.parametrize("location", stores("redis", "cluster", "memcached", "db", "file"))
def test_processes_changing_the_chain_at_once_lose_and_double_nothing(location):
    """Four processes each start and fold a record 25 times, all at once
    (every round is a new generation of the chain, raced for with add()):
    the totals are the exact sum of what they counted."""
    pytest.importorskip("prometheus_client")
    from tests.helpers.stats_workers import churn

    config = {**CONFIG, "LOCATION": location}
    only = {"default": settings.CACHES["default"], location: settings.CACHES[location], ALIAS: config}
    with override_settings(CACHES=only, DOGPILE={"STATS_INTERVAL": INTERVAL}):
        caches[location].clear()
        results = SPAWN.Queue()
        at = time.time() + 3
        procs = [SPAWN.Process(target=churn, args=(ALIAS, config, 25, at, results)) for _ in range(4)]
        for p in procs:
            p.start()
        counted = [results.get(timeout=90) for _ in procs]
        for p in procs:
            p.join(30)
        expected = _summed(*counted)
        assert (
            sum(expected[k] for k in ("HIT", "MISS", "UPDATING")) == 4 * 49
        )  # 25 rounds of 1, 2, 3, 1... calls
        data, _ = Readings().until(lambda d, n: d["processes"] == {}, 10 * QUIET + 10, "all folded")
        assert data["total"] == data["retired"] == expected

"""Deploys without a cold start: with ``PREVIOUS_VERSION`` or
``PREVIOUS_KEY_PREFIX``, a key with no record under the new version or
prefix is served stale from its record of before the deploy while one
caller makes it anew -- sync, async, in batches, and under load from 4
processes, against Django's own ``get_or_set``."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections import Counter

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from django_dogpile.cache import DogpileCache
from django_dogpile.testing import another_process
from tests.helpers.procs import deploy_load
from tests.helpers.stores import stores

SPAWN = multiprocessing.get_context("spawn")
THREE = stores("locmem", "redis", "memcached")


def alias(store, version=1, prefix="dep", **options):
    return DogpileCache(store, {"TIMEOUT": 100, "KEY_PREFIX": prefix, "VERSION": version, "OPTIONS": options})


def elsewhere(store):
    """Another process where there is a shared lease; on locmem (a process's
    own store) another thread of this one."""
    return contextlib.nullcontext() if store == "locmem" else another_process()


def holding(cache, key, value="new"):
    """A thread regenerating ``key`` until ``release`` is set."""
    inside, release = threading.Event(), threading.Event()

    def slow():
        inside.set()
        release.wait(10)
        return value

    t = threading.Thread(target=lambda: cache.get_or_set(key, slow))
    t.start()
    assert inside.wait(5)
    return t, release


@pytest.mark.parametrize("store", THREE)
@pytest.mark.parametrize(
    "before, after",
    [
        ({"VERSION": 3}, {"VERSION": 4, "PREVIOUS_VERSION": True}),
        ({"VERSION": 3}, {"VERSION": 7, "PREVIOUS_VERSION": 3}),
        ({"prefix": "blue"}, {"prefix": "green", "PREVIOUS_KEY_PREFIX": "blue"}),
    ],
    ids=["version-1", "explicit-version", "prefix"],
)
def test_the_record_of_before_the_deploy_is_served_stale_while_one_caller_makes_it(store, before, after):
    old = alias(store, before.get("VERSION", 1), before.get("prefix", "dep"))
    old.clear()
    old.set("page", "before")
    opts = {k: v for k, v in after.items() if k.startswith("PREVIOUS")}
    new = alias(store, after.get("VERSION", 1), after.get("prefix", "dep"), **opts)
    t, release = holding(new, "page")
    try:
        with elsewhere(store):
            assert new.get_or_set_status("page", lambda: "never") == ("before", "UPDATING")
    finally:
        release.set()
        t.join(5)
    assert new.get_or_set_status("page", lambda: "never") == ("new", "HIT")
    assert new.get("page") == "new"
    assert old.get("page") == "before"  # the old version's record is left to expire


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_without_the_option_a_bump_is_a_cold_miss(store):
    old = alias(store, 1)
    old.clear()
    old.set("page", "before")
    new = alias(store, 2)
    assert new.get_or_set_status("page", lambda: "made") == ("made", "MISS")
    # the regenerating caller itself is served its new value, counted EXPIRED
    newer = alias(store, 3, PREVIOUS_VERSION=True)
    assert newer.get_or_set_status("page", lambda: "made3") == ("made3", "EXPIRED")


def test_a_hit_costs_no_extra_read_and_a_miss_one(redis_server):
    from tests.stores.test_redis import Monitor

    old = alias("redis", 1)
    old.clear()
    old.set("a", "before")
    new = alias("redis", 2, PREVIOUS_VERSION=True)
    new.set("fresh", "x")
    raw = new.store.client.get_client(write=True)
    monitor = Monitor(redis_server.port)
    try:
        raw.execute_command("PING", "start-dep")
        monitor.commands("start-dep")
        new.get_or_set("fresh", "never")
        raw.execute_command("PING", "mid-dep")
        hit = monitor.commands("mid-dep")
        new.get_or_set("a", "made")
        raw.execute_command("PING", "end-dep")
        regen = monitor.commands("end-dep")
    finally:
        monitor.close()
    assert hit == ["GET"]
    assert regen[:2] == ["GET", "GET"]  # the new key, then the old one
    assert "EVALSHA" in regen  # then the lease and the fenced write, as for any stale key


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_a_batch_serves_the_old_records_and_makes_the_rest_in_one_call(store):
    old = alias(store, 1)
    old.clear()
    old.set_many({"a": "A1", "b": "B1", "c": "C1"})
    new = alias(store, 2, PREVIOUS_VERSION=True)
    t, release = holding(new, "a")
    calls = []
    try:
        with elsewhere(store):
            got = new.get_or_set_many(
                ["a", "b", "c", "d"], lambda ks: calls.append(ks) or {k: k + "2" for k in ks}
            )
    finally:
        release.set()
        t.join(5)
    assert got == {"a": "A1", "b": "b2", "c": "c2", "d": "d2"}  # a: served stale, another makes it
    assert calls == [["b", "c", "d"]]
    assert new.get_many(["a", "b", "c", "d"]) == {"a": "new", "b": "b2", "c": "c2", "d": "d2"}


def test_async_serves_the_old_record_on_the_loop_while_another_makes_it(redis_server):
    store = "redis"
    old = alias("redis", 1)
    old.clear()
    old.set("page", "before")
    new = alias("redis", 2, PREVIOUS_VERSION=True)
    t, release = holding(new, "page")

    async def never():
        raise AssertionError("another caller makes it")

    try:
        with elsewhere(store):
            got = asyncio.run(new.aget_or_set_status("page", never))
    finally:
        release.set()
        t.join(5)
    assert got == ("before", "UPDATING")


def test_the_options_are_checked():
    bad = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "dp": {
            "BACKEND": "django_dogpile.cache.DogpileCache",
            "LOCATION": "default",
            "OPTIONS": {"PREVIOUS_VERSION": "three", "PREVIOUS_KEY_PREFIX": 5},
        },
    }
    with override_settings(CACHES=bad):
        found = [e for e in run_checks() if e.id.startswith("django_dogpile.E")]
    text = "\n".join(e.msg for e in found)
    assert "OPTIONS['PREVIOUS_VERSION']" in text and "'three'" in text
    assert "OPTIONS['PREVIOUS_KEY_PREFIX'] must be None or a str, not 5" in text


@pytest.mark.slow
def test_a_version_bump_under_load_from_four_processes(redis_server, tmp_path):
    """10 keys under VERSION 1; then 4 processes x 2 threads call them in
    turn for 1.5 s under VERSION 2 with a 0.4 s creator.  Ours: each key
    made once, every other call served at once (stale, then fresh).
    Django's own get_or_set: every caller that finds no value makes one."""
    keys = [f"k{i}" for i in range(10)]
    runs = {}
    for face, options in (("dogpile", {"PREVIOUS_VERSION": True}), ("django", None)):
        prefix = f"bump-{face}"
        if options is None:
            from django.core.cache import caches

            for k in keys:
                caches["redis"].set(f"{prefix}:{k}", "old", version=1)
        else:
            old = alias("redis", 1, prefix)
            old.set_many({k: "old" for k in keys})
        log = tmp_path / f"{face}.log"
        log.touch()
        results = SPAWN.Queue()
        start_at = time.time() + 3
        args = ("redis", prefix, keys, 2, options, start_at, start_at + 1.5, 0.4, str(log), results)
        procs = [SPAWN.Process(target=deploy_load, args=args) for _ in range(4)]
        for p in procs:
            p.start()
        outs = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(10)
        assert all(not out["errors"] for out in outs), outs
        statuses = sum((Counter(out["statuses"]) for out in outs), Counter())
        runs[face] = (
            Counter(log.read_text().split()),
            statuses,
            max(
                (t for out in outs for status, t in out["took"] if status not in ("EXPIRED", "MADE")),
                default=0,
            ),
        )
    made, statuses, slowest = runs["dogpile"]
    assert made == Counter({k: 1 for k in keys})  # each key made once
    assert set(statuses) <= {"HIT", "UPDATING", "EXPIRED"}, statuses  # nobody waited
    assert statuses["EXPIRED"] == len(keys)
    assert slowest < 0.2, slowest  # no call but the makers' waited for a 0.4 s creator
    django_made, _, _ = runs["django"]
    assert sum(django_made.values()) > len(keys), django_made  # one per caller that missed


# --- what a review found --------------------------------------------------------


@pytest.mark.parametrize("store", stores("locmem", "redis"))
@pytest.mark.parametrize("remove", ["delete", "delete_many", "set0", "incr_version"])
def test_a_value_removed_after_the_deploy_never_comes_back_from_before_it(store, remove):
    old = alias(store, 1)
    old.clear()
    old.set("k", "PRE-DEPLOY")
    new = alias(store, 2, PREVIOUS_VERSION=True)
    new.set("k", "FRESH")
    {
        "delete": lambda: new.delete("k"),
        "delete_many": lambda: new.delete_many(iter(["k"])),
        "set0": lambda: new.set("k", "x", 0),
        "incr_version": lambda: new.incr_version("k"),
    }[remove]()
    assert new.get_or_set_status("k", lambda: "MADE") == ("MADE", "MISS")


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_a_tagged_record_of_before_the_deploy_is_not_served(store):
    """Its tags were versioned under the old keys: whether they were
    invalidated cannot be told under the new ones, so it is a cold miss."""
    old = alias(store, 1)
    old.clear()
    old.set("user", "ALICE-PII", tags=["user:7"])
    old.invalidate_tags("user:7", hard=True)
    new = alias(store, 2, PREVIOUS_VERSION=True)
    assert new.get_or_set_status("user", lambda: "ERASED") == ("ERASED", "MISS")
    assert asyncio.run(new.aget_or_set_status("user2", lambda: "x")) == ("x", "MISS")
    old.set("tagged", "T1", tags=["t"])
    assert new.get_or_set_many(["tagged"], lambda ks: {k: "T2" for k in ks}) == {"tagged": "T2"}

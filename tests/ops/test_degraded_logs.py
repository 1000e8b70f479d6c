"""``django_dogpile.degraded``: a warning every degraded call repeats is
logged once, then counted, then summarised; and the episode's end is said."""

from __future__ import annotations

import logging
import time

import pytest

from django_dogpile import degraded

log = logging.getLogger("django_dogpile.test_degraded")


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(degraded, "INTERVAL", 0.2)
    yield
    degraded.recovered(log, "a", "down")


def lines(caplog, level=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.name == log.name and r.levelno >= level]


def test_a_hundred_repeats_are_one_line_then_one_at_the_end(caplog, quick):
    caplog.set_level(logging.DEBUG, logger="django_dogpile")
    for i in range(100):
        degraded.warn(log, "a", "down", "a: down (%s)", f"error {i}")
    assert lines(caplog) == ["a: down (error 0) [repeats summarised every 0s]"]
    assert len(lines(caplog, logging.DEBUG)) == 100  # the repeats, at DEBUG
    degraded.recovered(log, "a", "down")
    assert lines(caplog)[1].startswith("a: down is over after ") and "(99 more times" in lines(caplog)[1]
    assert all(
        r.dogpile_alias == "a" and r.dogpile_cause == "down" for r in caplog.records if r.name == log.name
    )
    degraded.recovered(log, "a", "down")  # over already: nothing more
    assert len(lines(caplog)) == 2


def test_an_episode_that_goes_on_is_summarised_and_a_quiet_one_ends(caplog, quick):
    caplog.set_level(logging.WARNING, logger="django_dogpile")
    degraded.warn(log, "a", "down", "a: down")
    degraded.warn(log, "a", "down", "a: down")
    degraded.warn(log, "b", "down", "b: down")  # another alias: its own episode
    time.sleep(0.3)
    assert "a: down goes on: 1 more times in the last 0s" in lines(caplog)
    time.sleep(0.5)  # a quiet interval ends it without a word
    degraded.warn(log, "a", "down", "a: down")
    got = lines(caplog)
    assert got.count("a: down [repeats summarised every 0s]") == 2
    assert got.count("b: down [repeats summarised every 0s]") == 1
    assert not any("b: down goes on" in line for line in got)  # b had no repeats


def test_an_episode_without_repeats_ends_at_info(caplog, quick):
    caplog.set_level(logging.INFO, logger="django_dogpile")
    degraded.warn(log, "a", "down", "a: down")
    degraded.recovered(log, "a", "down")
    ends = [r for r in caplog.records if "is over" in r.getMessage()]
    assert [r.levelno for r in ends] == [logging.INFO]


@pytest.mark.redis
@pytest.mark.parametrize("shards", [False, True], ids=["one-node", "a-shard-of-two"])
def test_writes_a_down_redis_drops_are_one_line_per_store(caplog, redis_server, shards):
    """A Redis store with IGNORE_EXCEPTIONS that is down drops each write:
    one WARNING for the store alias, the repeats at DEBUG."""
    from django.core.cache import caches
    from django.test import override_settings

    from django_dogpile.stores.redis import NOT_WRITTEN
    from tests.helpers.redis_server import free_port

    down = f"redis://127.0.0.1:{free_port()}/0"
    dead = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": [redis_server.url, down] if shards else down,
        "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.2},
    }
    if shards:  # the live shard's writes must not end the dead one's episode
        dead["OPTIONS"]["CLIENT_CLASS"] = "django_redis.client.ShardClient"
    front = {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "dead_store", "OPTIONS": {}}
    caplog.set_level(logging.DEBUG, logger="django_dogpile")
    with override_settings(CACHES={"default": front, "dead_store": dead, "dp_dead": front}):
        try:
            for i in range(20):
                caches["dp_dead"].set(f"k{i}", i)
        finally:
            # the episode ends with the test (its timer would go on counting)
            degraded.recovered(logging.getLogger("django_dogpile.stores.redis"), "dead_store", NOT_WRITTEN)
    mine = [r for r in caplog.records if getattr(r, "dogpile_cause", "") == NOT_WRITTEN]
    warned = [r.getMessage() for r in mine if r.levelno >= logging.WARNING]
    first, over = warned  # the first at once, then the end (said here) with the count
    dropped = len(mine) - 1
    assert first.startswith("dead_store: store unavailable; value not written (") and "refused" in first
    assert "is over after" in over and f"({dropped - 1} more times" in over
    assert {r.dogpile_alias for r in mine} == {"dead_store"}
    assert 3 <= dropped < 20 if shards else dropped == 20  # (a shard of two: some keys land)

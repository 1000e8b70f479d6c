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

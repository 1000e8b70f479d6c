"""The short page benchmark: benchmarks/pages.py, 2 workers, one round of 2 s.

Real gunicorn workers, a real redis-server and wrk.  Only exact things are
asserted (no timings): every response a 200, no run of the view in the
round, and the Redis commands a hot hit costs, counted from ``INFO
commandstats`` and divided by the requests the workers served.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks.pages import Config, run
from tests.helpers.redis_server import required

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CONFIG = Config(workers=2, rounds=1, seconds=2, warmup=1, connections=4, checks=5)


@pytest.fixture(scope="module")
def rounds():
    if shutil.which("wrk") is None:
        if required():
            pytest.fail("wrk is required here (CI) but is not installed")
        pytest.skip("wrk is not installed")
    result = run(CONFIG)
    assert result["near_unavailable"] is None  # not asked for
    assert set(result["rounds"]) == {"cache_page", "dogpile"}
    return {face: rows[0] for face, rows in result["rounds"].items()}


@pytest.mark.parametrize("face", ["cache_page", "dogpile"])
def test_every_response_is_a_200_hit(rounds, face):
    row = rounds[face]
    assert row["served"] > 0, row
    assert row["not_2xx"] == 0 and row["wrk_status_errors"] == 0, row
    assert row["view_runs"] == 0, row  # not one miss in the round


def test_a_dogpile_cache_page_hit_is_one_redis_get(rounds):
    row = rounds["dogpile"]
    assert row["commands"] == {"get": row["served"]}, row


def test_a_django_cache_page_hit_is_two_redis_gets(rounds):
    # the headers the page varies on (get_cache_key), then the page
    row = rounds["cache_page"]
    assert row["commands"] == {"get": 2 * row["served"]}, row

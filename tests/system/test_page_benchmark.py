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
    assert set(result["rounds"]) == {"floor", "cache_page", "dogpile"}
    return {face: rows[0] for face, rows in result["rounds"].items()}


@pytest.mark.parametrize("face", ["floor", "cache_page", "dogpile"])
def test_every_response_is_a_200_hit(rounds, face):
    row = rounds[face]
    assert row["served"] > 0, row
    assert row["not_2xx"] == 0 and row["wrk_status_errors"] == 0, row
    assert row["view_runs"] == 0, row  # not one miss in the round
    assert row["cancelled"] == 0, row  # a sync worker finishes what it took


def test_a_dogpile_cache_page_hit_is_one_redis_get(rounds):
    row = rounds["dogpile"]
    assert row["commands"] == {"get": row["served"]}, row


def test_a_django_cache_page_hit_is_two_redis_gets(rounds):
    # the headers the page varies on (get_cache_key), then the page
    row = rounds["cache_page"]
    assert row["commands"] == {"get": 2 * row["served"]}, row


# --- ASGI: uvicorn workers, async views --------------------------------------

#: commands a new connection sends (the pools grow during a round): HELLO,
#: and CLIENT SETINFO / SETNAME (``client|setinfo``, ``client|setname``)
CONNECT = {"hello", "client"}


@pytest.fixture(scope="module")
def asgi_rounds():
    if shutil.which("wrk") is None:
        if required():
            pytest.fail("wrk is required here (CI) but is not installed")
        pytest.skip("wrk is not installed")
    result = run(Config(**{**vars(CONFIG), "asgi": True}))
    assert {"floor", "cache_page", "dogpile"} <= set(result["rounds"])
    return {face: rows[0] for face, rows in result["rounds"].items()}


def _page_commands(row):
    return {c: n for c, n in row["commands"].items() if c.split("|")[0] not in CONNECT}


def _gets_per_answer(row, per_request):
    """``row``'s page commands are GETs, ``per_request`` for each answered
    request: a request cancelled before its answer (wrk stopping with up
    to ``connections`` in flight; uvicorn cancels them) made none, some or
    all of them."""
    commands = _page_commands(row)
    assert set(commands) <= {"get"}, row
    assert 0 <= row["cancelled"] <= CONFIG.connections, row
    answered = row["served"] - row["cancelled"]
    assert per_request * answered <= commands.get("get", 0) <= per_request * row["served"], row


@pytest.mark.parametrize("face", ["floor", "cache_page", "dogpile"])
def test_under_asgi_every_response_is_a_200_hit(asgi_rounds, face):
    row = asgi_rounds[face]
    assert row["served"] > 0, row
    assert row["not_2xx"] == 0 and row["wrk_status_errors"] == 0, row
    assert row["view_runs"] == 0, row


def test_under_asgi_the_floor_reads_nothing(asgi_rounds):
    assert _page_commands(asgi_rounds["floor"]) == {}, asgi_rounds["floor"]


def test_under_asgi_an_async_dogpile_cache_page_hit_is_one_redis_get(asgi_rounds):
    # read on the event loop (ASYNC_POOL): the same single GET as under WSGI
    _gets_per_answer(asgi_rounds["dogpile"], 1)


def test_under_asgi_djangos_cache_page_hit_is_two_redis_gets(asgi_rounds):
    for face in [f for f in ("cache_page", "cache_page_async") if f in asgi_rounds]:
        _gets_per_answer(asgi_rounds[face], 2)


def test_the_floor_reads_nothing(rounds):
    assert rounds["floor"]["commands"] == {}, rounds["floor"]

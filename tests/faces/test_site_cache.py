"""The per-site cache (``django_dogpile.middleware``) where Django documents
its ``UpdateCacheMiddleware`` / ``FetchFromCacheMiddleware`` pair, on a site
with sessions, messages, locale, CSRF and auth: one view run per expiry
across processes, and every rule of what is never cached, as for the page
decorator.  Where a scenario has a Django answer, the same requests go
through Django's pair too and the two are compared."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import pytest
from django.core.cache import caches
from django.test import AsyncClient, Client, override_settings

from tests.helpers import page_urls, site_urls, site_worker
from tests.helpers.page_urls import CALLS

SPAWN = multiprocessing.get_context("spawn")


def site(pair: tuple[str, str], alias: str, seconds: float = 60):
    return override_settings(
        MIDDLEWARE=site_urls.middleware(pair),
        ROOT_URLCONF="tests.helpers.site_urls",
        CACHE_MIDDLEWARE_ALIAS=alias,
        CACHE_MIDDLEWARE_SECONDS=seconds,
        CACHE_MIDDLEWARE_KEY_PREFIX="site",
    )


ours = site(site_urls.OURS, "dp_locmem")
djangos = site(site_urls.DJANGOS, "locmem")


@pytest.fixture(scope="module", autouse=True)
def db():
    from django.core.management import call_command

    call_command("migrate", verbosity=0, run_syncdb=True)


@pytest.fixture(autouse=True)
def fresh():
    for alias in ("dp_locmem", "locmem"):
        caches[alias].clear()
    CALLS.clear()
    page_urls.STATUS["code"] = 200


def status(response) -> str:
    return response.get("X-Dogpile-Cache", "")


def test_a_page_is_stored_and_served_as_by_djangos_pair():
    for stack in (ours, djangos):
        CALLS.clear()
        with stack:
            first, second = Client().get("/plain/"), Client().get("/plain/")
        assert first.content == second.content == b"plain 1"
        assert CALLS["plain"] == 1
    with ours:
        assert status(Client().get("/plain/")) == "HIT"


def test_async_requests_are_served_through_the_same_flow():
    async def two():
        client = AsyncClient()
        return await client.get("/async-plain/"), await client.get("/async-plain/")

    with ours:
        first, second = asyncio.run(two())
    assert (status(first), status(second)) == ("MISS", "HIT")
    assert CALLS["async_plain"] == 1


def test_other_methods_go_straight_to_the_view():
    with ours:
        Client().post("/plain/")
        Client().post("/plain/")
    assert CALLS["plain"] == 2


# --- what is never cached ---------------------------------------------------------


def test_a_page_that_writes_the_session_is_never_served_to_another_visitor():
    with ours:
        alice = Client().get("/cart/").content
        bob = Client().get("/cart/").content
    assert alice != bob and CALLS["cart"] == 2


def test_a_flash_message_is_never_served_to_another_visitor():
    with ours:
        alice = Client()
        alice.get("/add-message/")
        shown = alice.get("/home/")
        assert b"4711" in shown.content
        assert status(shown) == "MISS; uncacheable=messages"
        assert Client().get("/home/").content == b"home []"


def test_a_page_with_a_csrf_token_is_never_stored():
    with ours:
        r = Client().get("/form/")
        Client().get("/form/")
    assert status(r) == "MISS; uncacheable=csrf"
    assert CALLS["form"] == 2


@override_settings(SESSION_SAVE_EVERY_REQUEST=True)
def test_a_page_that_read_a_session_saved_on_every_request_is_not_stored():
    with ours:
        visitor = Client()
        visitor.get("/cart/")
        assert status(visitor.get("/cart/")) == "MISS; uncacheable=session"


@pytest.mark.parametrize(
    "url, word",
    [
        ("/directive/?cc=private", "private"),
        ("/directive/?cc=no-store", "private"),
        ("/vary-star/", "vary-star"),
    ],
)
def test_a_page_that_refuses_by_its_nature_is_never_stored(url, word):
    with ours:
        first = Client().get(url)
        Client().get(url)
    assert status(first) == f"MISS; uncacheable={word}"
    assert CALLS["directive"] + CALLS["vary_star"] == 2


def test_a_logged_in_page_is_never_served_to_anonymous():
    from django.contrib.auth.models import User

    User.objects.filter(username="alice").delete()
    User.objects.create_user("alice", password="pw")
    with ours:
        alice = Client()
        alice.login(username="alice", password="pw")
        assert alice.get("/whoami/").content == b"hello alice"
        assert Client().get("/whoami/").content == b"hello anonymous"
        assert alice.get("/whoami/").content == b"hello alice"


def test_the_vary_other_middleware_adds_is_learnt_as_by_djangos_pair():
    """LocaleMiddleware's response phase adds ``Vary: Accept-Language``
    after the page was stored: the update half learns it (and stores the
    page under the key it gives), so a page is made once per language, as
    with Django's pair."""
    runs = {}
    for name, stack in (("ours", ours), ("django", djangos)):
        CALLS.clear()
        with stack:
            for language in ("en", "en", "fr", "fr", "en"):
                Client(headers={"accept-language": language}).get("/plain/")
        runs[name] = CALLS["plain"]
    assert runs == {"ours": 2, "django": 2}


def test_the_page_face_and_the_middleware_share_one_key_scheme():
    """Our middleware and ``dogpile_cache_page`` key a page alike (URL,
    method, learnt Vary, language, time zone): a key prefix is what tells
    them apart, as with Django's."""
    from django_dogpile.faces.common import safe_key
    from django_dogpile.faces.page_keys import url_key

    with ours:
        request = Client().get("/plain/").wsgi_request
    assert url_key(request, "site").startswith(safe_key("dogpile.page", "site"))


# --- one view run per expiry, across processes ----------------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_one_view_run_per_expiry_across_processes(redis_server):
    """Three worker processes of four threads each on one slow page that
    stays fresh 1 s, for 4 s: Django's pair over the same DogpileCache alias
    runs the view for every request that arrives during a regeneration;
    ours runs it once per expiry."""
    from tests.helpers.procs import raw_redis

    runs = {}
    for pair in ("ours", "django"):
        counter = f"site:runs:{pair}"
        raw_redis().delete(counter)
        caches["dp_redis"].clear()
        url = f"/shared/?sleep=0.3&counter={counter}"
        with site(site_worker.OURS if pair == "ours" else site_worker.DJANGOS, "dp_redis", seconds=1):
            Client().get(url)  # the URL's final Vary learnt: its first request ran alone
        start_at = time.time() + 4
        until = start_at + 4
        results = SPAWN.Queue()
        procs = [
            SPAWN.Process(
                target=site_worker.serve, args=(pair, "dp_redis", 1, 4, start_at, until, url, results)
            )
            for _ in range(3)
        ]
        for p in procs:
            p.start()
        statuses = [code for _ in procs for code in results.get(timeout=120)]
        for p in procs:
            p.join(10)
        assert set(statuses) == {200} and len(statuses) > 100
        runs[pair] = int(raw_redis().get(counter))
    print(f"view runs in 4 s of a page fresh for 1 s: {runs}")
    # 4 s of a page fresh for 1 s (stale when the load starts): one run per expiry
    assert runs["ours"] <= 6, runs
    assert runs["django"] >= 2 * runs["ours"], runs


# --- found by attacking the middleware ---------------------------------------------


def partial_site(pair, alias):
    stack = site_urls.middleware(pair)
    stack.insert(len(stack) - 1, "tests.helpers.site_urls.PartialVaryMiddleware")
    return override_settings(
        MIDDLEWARE=stack,
        ROOT_URLCONF="tests.helpers.site_urls",
        CACHE_MIDDLEWARE_ALIAS=alias,
        CACHE_MIDDLEWARE_SECONDS=60,
        CACHE_MIDDLEWARE_KEY_PREFIX="site",
    )


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_cold_requests_never_get_another_requests_variant(trial):
    """A middleware adds ``Vary: X-Partial`` after the view: a full page and
    a fragment requested at once on a cold URL each get their own, and each
    is stored under its own key (the first, seen by a reviewer: the fragment
    request was served the full page, stored then under its own key)."""
    from django_dogpile.testing import run_concurrently

    def get(partial: bool):
        return Client(headers={"x-partial": "true"} if partial else {}).get("/products/?sleep=0.2")

    with partial_site(site_urls.OURS, "dp_locmem"):
        kinds = [False, True]
        got = run_concurrently(2, lambda i: get(kinds[i]))
        assert [b"<html>" in r.content for r in got] == [True, False]
        for partial in (False, True, True, False):
            assert (b"<html>" in get(partial).content) is not partial


def test_the_async_update_half_does_store_io_off_the_loop():
    """Over the database cache the update half's writes would raise
    SynchronousOnlyOperation on the event loop (found by a reviewer)."""
    caches["dp_db"].clear()

    async def two():
        client = AsyncClient()
        return await client.get("/async-plain/"), await client.get("/async-plain/")

    with site(site_urls.OURS, "dp_db"):
        first, second = asyncio.run(two())
    assert (first.status_code, status(first), status(second)) == (200, "MISS", "HIT")

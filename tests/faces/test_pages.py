"""dogpile_cache_page through real middleware stacks, beside Django's cache_page.

Each scenario runs over locmem, Redis, Redis with NEAR_CACHE and memcached
(``dl``/``dr``/``dn``/``dm``), sync and async where
it applies, with the contrib middleware that write the response after the
view (sessions, locale, CSRF, auth, messages).  Where Django's ``cache_page``
gets a case right the same requests go through it (``jl``/``jr``/``jm``) and the
test asserts both agree; where it gets one wrong the test says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.template import Context, Template
from django.test import AsyncClient, Client, override_settings
from django.utils import timezone

from django_dogpile.decorators import dogpile_cache_page
from django_dogpile.engine import memory
from django_dogpile.faces.common import make_fragment_key, safe_key
from django_dogpile.testing import Clock, run_concurrently
from tests.helpers import page_urls
from tests.helpers.page_urls import CALLS
from tests.settings import FULL_STACK

STORES = {
    "dl": ("dp_locmem", "locmem", "jl"),
    "dr": ("dp_redis", "redis", "jr"),
    "dn": ("dp_near", "redis", "jr"),  # Redis, NEAR_CACHE on
    "dm": ("dp_memcached", "memcached", "jm"),
}


@pytest.fixture(autouse=True)
def stack():
    with override_settings(ROOT_URLCONF="tests.helpers.page_urls", MIDDLEWARE=FULL_STACK):
        yield


@pytest.fixture(scope="module", autouse=True)
def db():
    from django.core.management import call_command

    call_command("migrate", verbosity=0, run_syncdb=True)


@pytest.fixture(
    params=[
        "dl",
        pytest.param("dr", marks=pytest.mark.redis),
        pytest.param("dn", marks=pytest.mark.redis),
        pytest.param("dm", marks=pytest.mark.memcached),
    ]
)
def face(request):
    """Our face over one store; ``face`` is its URL prefix."""
    ours, store, _ = STORES[request.param]
    for alias in (ours, store, "dp_stale", "locmem"):
        caches[alias].clear()
    CALLS.clear()
    page_urls.STATUS["code"] = 200
    return request.param


def django_twin(face: str) -> str:
    return STORES[face][2]


def status(response) -> str:
    return response.get("X-Dogpile-Cache", "")


# --- 1. nothing per-visitor is ever stored ----------------------------------


def test_a_page_that_writes_the_session_is_never_served_to_another_visitor(face):
    alice = Client()
    first = alice.get(f"/{face}/cart/")
    assert first.content == b"your cart: cart-1"
    assert status(first) == "MISS; uncacheable=session"
    assert "sessionid" in first.cookies
    bob = Client()
    second = bob.get(f"/{face}/cart/")
    assert second.content == b"your cart: cart-2"  # his own cart, not alice's
    assert CALLS["cart"] == 2


def test_djangos_cache_page_leaks_the_session_page(face):
    """Django's face stores the page before SessionMiddleware runs: the next
    visitor gets the first visitor's cart.  We promise better (above)."""
    twin = django_twin(face)
    Client().get(f"/{twin}/cart/")
    leaked = Client().get(f"/{twin}/cart/")
    assert leaked.content == b"your cart: cart-1"
    assert CALLS["cart"] == 1


@pytest.mark.parametrize("use_async", [False, True])
def test_a_flash_message_is_never_served_to_another_visitor(face, use_async):
    alice = Client()
    alice.get("/add-message/")
    shown = alice.get(f"/{face}/home/")
    assert b"4711" in shown.content
    assert status(shown) == "MISS; uncacheable=messages"
    if use_async:
        other = asyncio.run(AsyncClient().get(f"/{face}/home/"))
    else:
        other = Client().get(f"/{face}/home/")
    assert other.content == b"home []"
    assert status(other) == "MISS"
    assert status(Client().get(f"/{face}/home/")) == "HIT"


def test_djangos_cache_page_leaks_the_flash_message(face):
    twin = django_twin(face)
    alice = Client()
    alice.get("/add-message/")
    alice.get(f"/{twin}/home/")
    assert b"4711" in Client().get(f"/{twin}/home/").content


def test_a_page_with_a_csrf_token_is_never_stored(face):
    responses = [Client().get(f"/{face}/form/") for _ in range(3)]
    assert CALLS["form"] == 3
    tokens = {r.content for r in responses}
    assert len(tokens) == 3  # each visitor its own token
    assert {status(r) for r in responses} == {"MISS; uncacheable=csrf"}
    assert all("csrftoken" in r.cookies for r in responses)


@override_settings(SESSION_SAVE_EVERY_REQUEST=True)
def test_a_page_that_read_a_session_saved_on_every_request_is_not_stored(face):
    visitor = Client()
    visitor.get(f"/{face}/cart/")  # has a session now
    CALLS.clear()
    # the session is read (lang view does not), so only the cart counts
    r = visitor.get(f"/{face}/cart/")
    assert status(r) == "MISS; uncacheable=session"


def test_directives_are_parsed_not_matched_as_substrings(face):
    """Django 6.1 parses Cache-Control; 5.2 matched "xprivate" as private."""
    c = Client()
    c.get(f"/{face}/directive/", {"cc": "public, xprivate=1"})
    hit = c.get(f"/{face}/directive/", {"cc": "public, xprivate=1"})
    assert status(hit) == "HIT"
    refused = c.get(f"/{face}/directive/", {"cc": "public, private"})
    assert status(refused) == "MISS; uncacheable=private"
    assert status(c.get(f"/{face}/directive/", {"cc": "no-store"})) == "MISS; uncacheable=private"


# --- 2. keys as Django makes them ---------------------------------------------


@pytest.mark.parametrize("prefix", ["ours", "django"])
def test_language_is_in_the_page_key_as_in_djangos(face, prefix):
    name = face if prefix == "ours" else django_twin(face)
    fr = Client().get(f"/{name}/lang/", headers={"accept-language": "fr"})
    en = Client().get(f"/{name}/lang/", headers={"accept-language": "en"})
    assert fr.content == b"language=fr" and fr["Content-Language"] == "fr"
    assert en.content == b"language=en" and en["Content-Language"] == "en"
    again = Client().get(f"/{name}/lang/", headers={"accept-language": "fr"})
    assert again.content == b"language=fr"
    assert CALLS["lang"] == 2


@pytest.mark.parametrize("prefix", ["ours", "django"])
def test_time_zone_is_in_the_page_key_as_in_djangos(face, prefix):
    name = face if prefix == "ours" else django_twin(face)
    for zone in ("Europe/Paris", "UTC", "Europe/Paris"):
        with timezone.override(zone):
            assert Client().get(f"/{name}/zone/").content == f"zone={zone}".encode()
    assert CALLS["zone"] == 2


# --- 3. every caller its own object -------------------------------------------


@pytest.mark.slow
def test_async_waiters_each_get_their_own_response(face):
    async def main():
        client = AsyncClient()
        return await asyncio.gather(*(client.get(f"/{face}/async-plain/", {"sleep": 0.3}) for _ in range(6)))

    responses = asyncio.run(main())
    assert CALLS["async_plain"] == 1
    assert len({id(r) for r in responses}) == 6
    # a middleware touching one visitor's response touches nobody else's
    responses[0]["X-Only-Me"] = "1"
    assert [r.has_header("X-Only-Me") for r in responses].count(True) == 1


@pytest.mark.slow
def test_async_sessions_are_not_shared_between_waiters(face):
    """Each waiter's SessionMiddleware sets its own cookie on its own response."""

    async def main():
        clients = [AsyncClient() for _ in range(4)]
        return await asyncio.gather(*(c.get(f"/{face}/async-plain/", {"sleep": 0.3}) for c in clients))

    responses = asyncio.run(main())
    assert len({id(r) for r in responses}) == 4
    assert len({id(r.cookies) for r in responses}) == 4


def test_sync_waiter_gets_its_own_copy(face):
    ours = caches[STORES[face][0]]
    made = []

    def create():
        made.append(object())
        return {"list": [1]}

    results = run_concurrently(4, lambda i: ours.get_or_set("own-copy", create, 60))
    assert len(made) == 1
    assert len({id(r) for r in results}) == 4


# --- 4. BACKGROUND never shares live request state ----------------------------


class _Slow:
    """Renders as its value after a short sleep: makes interleaving likely."""

    def __init__(self, value):
        self.value = value

    def __str__(self):
        time.sleep(0.0005)
        return str(self.value)


@pytest.mark.slow
def test_background_fragment_renders_from_a_copy_of_the_context():
    cache = caches["dp_bg"]
    cache.clear()
    src = (
        "{% load dogpile %}{% for i in outer %}"
        "{% dogpile_cache 60 frag %}{% for j in inner %}{{ i }}.{{ j }};{% endfor %}"
        "{% enddogpile_cache %}|{% endfor %}"
    )
    template = Template(src)
    inner = [_Slow(n) for n in range(20)]
    key = make_fragment_key("frag")
    bad = []
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_bg"}):
        for _ in range(15):
            cache.set(key, "old", 60)
            cache.invalidate(key)
            out = template.render(Context({"outer": [_Slow(n) for n in range(20)], "inner": inner}))
            assert out == "old|" * 20  # every iteration served the stale fragment
            deadline = time.monotonic() + 5
            while (stored := cache.get(key)) in (None, "old") and time.monotonic() < deadline:
                time.sleep(0.01)
            firsts = {part.split(".")[0] for part in stored.split(";") if part}
            if firsts != {"0"} or stored.count(";") != 20:
                bad.append(stored)
    assert bad == []


def test_a_page_is_regenerated_in_its_own_request_even_with_background():
    """BACKGROUND: a view is never re-run on a request another thread uses;
    the request that found the page stale regenerates it itself."""
    calls = []

    @dogpile_cache_page(60, cache="dp_bg")
    def view(request):
        import threading

        calls.append(threading.current_thread().name)
        return HttpResponse(f"v{len(calls)}")

    caches["dp_bg"].clear()
    from django.test import RequestFactory

    rf = RequestFactory()
    with Clock() as clock:
        assert view(rf.get("/bgpage/")).content == b"v1"
        clock.advance(61)
        assert view(rf.get("/bgpage/")).content == b"v2"
    assert all(not name.startswith("django_dogpile") for name in calls)


# --- 5. HEAD like Django --------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ours", "django"])
def test_head_is_served_the_get_page_or_stored_as_its_own(face, prefix):
    name = face if prefix == "ours" else django_twin(face)
    c = Client()
    c.head(f"/{name}/plain/")
    c.head(f"/{name}/plain/")
    assert CALLS["plain"] == 1  # the second HEAD is a hit
    c.get(f"/{name}/plain/")
    assert CALLS["plain"] == 2  # GET has its own key
    c.head(f"/{name}/plain/")
    assert CALLS["plain"] == 2


@pytest.mark.slow
def test_concurrent_heads_on_a_cold_page_run_the_view_once(face):
    responses = run_concurrently(8, lambda i: Client().head(f"/{face}/plain/?sleep=0.3"))
    assert [r.status_code for r in responses] == [200] * 8
    assert CALLS["plain"] == 1


# --- 6. Vary learnt without loss --------------------------------------------------


@pytest.mark.parametrize("prefix", ["ours", "django"])
def test_the_first_varying_response_is_stored(face, prefix):
    name = face if prefix == "ours" else django_twin(face)
    for language in ("fr", "fr", "de", "de", "fr"):
        r = Client().get(f"/{name}/varies/", headers={"accept-language": language})
        assert r.content == f"accept-language={language}".encode()
    assert CALLS["varies"] == 2


def test_an_absent_header_does_not_share_a_key_with_an_empty_one(face):
    c = Client()
    c.get(f"/{face}/varies/")
    assert c.get(f"/{face}/varies/").content == b"accept-language=None"
    assert c.get(f"/{face}/varies/", headers={"accept-language": ""}).content == b"accept-language="


def test_alternating_anonymous_and_authorization_requests_settle(face):
    c = Client()
    for i in range(20):
        headers = {} if i % 2 else {"authorization": "Bearer x"}  # first one authorized
        c.get(f"/{face}/plain/", headers=headers)
    assert CALLS["plain"] <= 3  # steady state: hits (was 20 view runs)


def test_the_vary_record_expires_with_the_page(face):
    ours = caches[STORES[face][0]]
    with Clock() as clock:
        Client().get(f"/{face}/varies/", headers={"accept-language": "fr"})
        (memo,) = memory.pages(ours.location).vary  # keyed as the store keys it
        url_key = safe_key(
            "dogpile.page",
            "",
            hashlib.md5(f"http://testserver/{face}/varies/".encode(), usedforsecurity=False).hexdigest(),
        )
        assert memo == ours.store_key(url_key)
        assert ours.get(url_key + ".vary") == ["accept-language"]
        clock.advance(60 + ours.options.grace - 1)
        assert ours.get(url_key + ".vary") == ["accept-language"]
        clock.advance(2)
        assert ours.get(url_key + ".vary") is None


# --- 7. hit-for-miss only for pages that refuse by their own headers ----------


@pytest.mark.slow
def test_a_transient_error_keeps_protection_and_serves_stale():
    caches["dp_stale"].clear()
    CALLS.clear()
    c = Client()
    with Clock() as clock:
        assert c.get("/ds/flaky/?sleep=0.3").content == b"flaky 1"
        clock.advance(61)
        page_urls.STATUS["code"] = 503
        try:
            first = run_concurrently(8, lambda i: Client().get("/ds/flaky/?sleep=0.3"))
            assert CALLS["flaky"] == 2  # one regeneration; it failed
            assert [r.status_code for r in first] == [200] * 8  # stale for all
            assert sorted(status(r) for r in first) == ["STALE"] + ["UPDATING"] * 7
            again = run_concurrently(8, lambda i: Client().get("/ds/flaky/?sleep=0.3"))
            assert CALLS["flaky"] == 3  # still one per round: no hit-for-miss
            assert [r.content for r in again] == [b"flaky 1"] * 8
        finally:
            page_urls.STATUS["code"] = 200
        assert c.get("/ds/flaky/?sleep=0.3").content == b"flaky 4"
        assert status(c.get("/ds/flaky/?sleep=0.3")) == "HIT"


def test_a_cold_error_is_not_stored_and_does_not_hold_the_page(face):
    page_urls.STATUS["code"] = 503
    r = Client().get(f"/{face}/flaky/")
    assert r.status_code == 503 and status(r) == "MISS; uncacheable=status"
    page_urls.STATUS["code"] = 200
    assert status(Client().get(f"/{face}/flaky/")) == "MISS"
    assert status(Client().get(f"/{face}/flaky/")) == "HIT"


# --- 8. Django parity ------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ours", "django"])
def test_a_304_gets_cache_headers_as_cache_page_gives_them(face, prefix):
    name = face if prefix == "ours" else django_twin(face)
    r = Client().get(f"/{name}/tagged/", headers={"if-none-match": '"v1"'})
    assert r.status_code == 304
    assert "max-age=60" in r["Cache-Control"]
    assert r.has_header("Expires")


def test_no_age_on_a_miss(face):
    c = Client()
    miss = c.get(f"/{face}/plain/")
    assert status(miss) == "MISS" and not miss.has_header("Age")
    assert not Client().get(f"/{django_twin(face)}/plain/").has_header("Age")
    hit = c.get(f"/{face}/plain/")
    # deliberately better than Django: a page from the store says how old it is
    assert hit["Age"] == "0"


def test_other_methods_reach_the_view_before_any_key_work():
    @dogpile_cache_page(60, cache="dp_locmem")
    def view(request):
        return HttpResponse("posted")

    request = HttpRequest()  # no SERVER_NAME: building a URL would fail
    request.method = "POST"
    assert view(request).content == b"posted"


def test_clear_forgets_the_page_memos(face):
    ours = caches[STORES[face][0]]
    Client().get(f"/{face}/varies/", headers={"accept-language": "fr"})
    Client().get(f"/{face}/directive/", {"cc": "private"})
    memos = memory.pages(ours.location)
    assert memos.vary and memos.passes._until
    ours.clear()
    assert not memos.vary and not memos.passes._until


def test_a_hit_is_exactly_one_store_read(face):
    ours = caches[STORES[face][0]]
    store = ours.store
    c = Client()
    c.get(f"/{face}/plain/")
    reads = []
    original_get, original_many = store.get, store.get_many
    store.get = lambda *a, **k: reads.append(a[0]) or original_get(*a, **k)
    store.get_many = lambda *a, **k: reads.append(a[0]) or original_many(*a, **k)
    try:
        r = c.get(f"/{face}/plain/")
    finally:
        del store.get, store.get_many
    assert status(r) == "HIT"
    assert len(reads) == 1, reads


def test_a_page_that_varies_on_star_is_never_stored(face):
    for _ in range(2):
        r = Client().get(f"/{face}/vary-star/")
    assert status(r) == "MISS; uncacheable=vary-star"
    assert CALLS["vary_star"] == 2


@pytest.mark.parametrize("prefix", ["ours", "django"])
def test_a_logged_in_page_is_never_served_to_anonymous(face, prefix):
    """The page read the session (request.user): ours varies it on Cookie
    before storing, as SessionMiddleware will.  Django's cache_page stores it
    before SessionMiddleware adds that Vary, and serves alice's page to
    anonymous visitors: Django gets this one wrong."""
    from django.contrib.auth.models import User

    name = face if prefix == "ours" else django_twin(face)
    User.objects.filter(username="alice").delete()
    User.objects.create_user("alice", password="pw")
    alice = Client()
    alice.login(username="alice", password="pw")
    assert alice.get(f"/{name}/whoami/").content == b"hello alice"
    anonymous = Client().get(f"/{name}/whoami/").content
    if prefix == "ours":
        assert anonymous == b"hello anonymous"
        assert alice.get(f"/{name}/whoami/").content == b"hello alice"
    else:
        assert anonymous == b"hello alice"  # Django's leak


# --- found by attacking the face -------------------------------------------------


def test_template_responses_are_judged_after_rendering(face):
    alice, bob = Client(), Client()
    alice.get("/set-cart/", {"v": "alice-cart"})
    bob.get("/set-cart/", {"v": "bob-cart"})
    assert alice.get(f"/{face}/tr-session/").content == b"cart=alice-cart"
    assert bob.get(f"/{face}/tr-session/").content == b"cart=bob-cart"
    assert Client().get(f"/{face}/tr-session/").content == b"cart="
    tokens = {Client().get(f"/{face}/tr-csrf/").content for _ in range(2)}
    assert len(tokens) == 2 and CALLS["tr_csrf"] == 2
    alice.get("/add-message/")
    assert b"4711" in alice.get(f"/{face}/tr-messages/").content
    assert Client().get(f"/{face}/tr-messages/").content == b"messages="


def test_a_malformed_csrf_cookie_does_not_switch_caching_off(face):
    """CsrfViewMiddleware renews a visitor's bad cookie before the view: that
    says nothing about the page, and must not put it into hit-for-miss."""
    attacker = Client()
    attacker.cookies["csrftoken"] = "not-a-token"
    r = attacker.get(f"/{face}/plain/")
    assert status(r) == "MISS" and "csrftoken" in r.cookies  # renewed for them
    for _ in range(3):
        assert status(Client().get(f"/{face}/plain/")) == "HIT"
    assert CALLS["plain"] == 1


def test_a_visitor_with_a_session_cookie_gets_pages_varying_on_cookie(face):
    """``session.session_key`` is read without marking the session accessed:
    a page made for a visitor with a session may show it."""
    alice, bob = Client(), Client()
    alice.get("/set-cart/", {"v": "a"})
    bob.get("/set-cart/", {"v": "b"})
    a = alice.get(f"/{face}/session-key/").content
    b = bob.get(f"/{face}/session-key/").content
    assert a != b
    assert alice.get(f"/{face}/session-key/").content == a


def test_djangos_cache_page_leaks_the_session_key(face):
    twin = django_twin(face)
    alice, bob = Client(), Client()
    alice.get("/set-cart/", {"v": "a"})
    bob.get("/set-cart/", {"v": "b"})
    assert alice.get(f"/{twin}/session-key/").content == bob.get(f"/{twin}/session-key/").content


def test_a_fragment_with_a_csrf_token_is_never_stored(face):
    first = Client().get(f"/{face}/fragment-csrf/")
    second = Client().get(f"/{face}/fragment-csrf/")
    assert first.content != second.content  # each visitor their own token
    assert status(second) == "MISS; uncacheable=csrf"


def test_async_head_after_get_is_a_hit(face):
    async def main():
        client = AsyncClient()
        await client.get(f"/{face}/async-plain/")
        return await client.head(f"/{face}/async-plain/")

    r = asyncio.run(main())
    assert status(r) == "HIT" and CALLS["async_plain"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["varies", "async-varies"])
def test_concurrent_cold_requests_on_a_varying_page_run_the_view_once(face, name):
    """The first response teaches Vary; the requests queued behind it re-key
    and are served what it stored."""
    if name.startswith("async"):

        async def main():
            client = AsyncClient()
            return await asyncio.gather(
                *(
                    client.get(f"/{face}/{name}/", {"sleep": 0.3}, headers={"accept-language": "fr"})
                    for _ in range(6)
                )
            )

        responses = asyncio.run(main())
    else:
        responses = run_concurrently(
            6, lambda i: Client().get(f"/{face}/{name}/", {"sleep": 0.3}, headers={"accept-language": "fr"})
        )
    assert [r.content for r in responses] == [b"accept-language=fr"] * 6
    assert CALLS[name.replace("-", "_")] == 1


def test_a_message_only_added_is_not_in_the_page_and_does_not_refuse_it(face):
    first = Client()
    r = first.get(f"/{face}/note/")
    assert status(r) == "MISS" and r.content == b"noted"
    assert status(Client().get(f"/{face}/note/")) == "HIT"
    # the message went to the first visitor only, shown on their next page
    assert b"4711" in first.get(f"/{face}/home/").content


@override_settings(SESSION_SAVE_EVERY_REQUEST=True)
def test_an_empty_session_saved_on_every_request_does_not_refuse_the_page(face):
    """SessionMiddleware saves (and sends) only a session that is not empty."""
    r = Client().get(f"/{face}/touch-session/")
    assert status(r) == "MISS" and "sessionid" not in r.cookies
    assert status(Client().get(f"/{face}/touch-session/")) == "HIT"

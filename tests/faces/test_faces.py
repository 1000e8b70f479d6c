"""The template tag and the decorators, over locmem and Redis."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.template import Context, Template, TemplateSyntaxError
from django.test import AsyncClient, Client, override_settings

from django_dogpile.decorators import cached
from django_dogpile.faces.common import make_fragment_key
from django_dogpile.testing import Clock, run_concurrently
from tests import urls


@pytest.fixture(autouse=True)
def clean():
    for alias in ("dp_locmem", "locmem"):
        caches[alias].clear()
    urls.CALLS["n"] = 0  # clear() of the page cache also forgets its memos
    yield


@pytest.fixture(scope="module", autouse=True)
def db():
    from django.core.management import call_command

    call_command("migrate", verbosity=0, run_syncdb=True)


def render(src, using="dp_locmem", **ctx):
    with override_settings(DOGPILE={"CACHE_ALIAS": using}):
        return Template("{% load dogpile %}" + src).render(Context(ctx))


# --- template tag ------------------------------------------------------------


def test_tag_caches_and_varies():
    calls = []
    src = "{% dogpile_cache 60 frag who %}{{ fn }}{% enddogpile_cache %}"
    fn = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert render(src, who="a", fn=fn) == "1"
    assert render(src, who="a", fn=fn) == "1"
    assert render(src, who="b", fn=fn) == "2"
    assert caches["dp_locmem"].invalidate(make_fragment_key("frag", ["a"]))
    assert render(src, who="a", fn=fn) == "3"


def test_tag_using_and_none_timeout_and_nesting():
    src = (
        '{% dogpile_cache None outer using="dp_locmem" %}o{{ x }}'
        "{% dogpile_cache 5 inner %}i{{ x }}{% enddogpile_cache %}"
        "{% enddogpile_cache %}"
    )
    assert render(src, x=1) == "o1i1"
    assert render(src, x=2) == "o1i1"


def test_drop_in_for_django_cache_tag():
    django_src = "{% load cache %}{% cache 60 side x %}[{{ x }}]{% endcache %}"
    ours = (
        django_src.replace("{% load cache %}", "{% load dogpile %}")
        .replace("{% cache", "{% dogpile_cache")
        .replace("endcache", "enddogpile_cache")
    )
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_locmem"}):
        assert Template(ours).render(Context({"x": 1})) == Template(django_src).render(Context({"x": 1}))


@pytest.mark.parametrize(
    "src, message",
    [
        ("{% dogpile_cache %}{% enddogpile_cache %}", "requires at least 2 arguments"),
        ("{% dogpile_cache 60 %}{% enddogpile_cache %}", "requires at least 2 arguments"),
        ('{% dogpile_cache "soon" f %}{% enddogpile_cache %}', "non-integer timeout"),
    ],
)
def test_tag_syntax_errors_name_the_tag(src, message):
    with pytest.raises(TemplateSyntaxError, match=message) as exc:
        Template("{% load dogpile %}" + src)
    assert "dogpile_cache" in str(exc.value)


def test_tag_render_time_errors():
    with pytest.raises(TemplateSyntaxError, match="dogpile_cache.*non-integer"):
        render("{% dogpile_cache t f %}x{% enddogpile_cache %}", t="abc")


def test_tag_using_is_resolved_at_render_as_djangos():
    """``using`` is an expression: an unknown alias is an error when the
    template renders, not when it compiles (Django's ``{% cache %}`` too:
    settings may change between the two, as under ``override_settings``)."""
    ours = Template('{% load dogpile %}{% dogpile_cache 60 f using="nope" %}x{% enddogpile_cache %}')
    theirs = Template('{% load cache %}{% cache 60 f using="nope" %}x{% endcache %}')
    for compiled in (ours, theirs):
        with pytest.raises(TemplateSyntaxError):
            compiled.render(Context())
    with pytest.raises(TemplateSyntaxError, match="dogpile_cache.*'nope' is not a cache alias"):
        ours.render(Context())
    extra = {"nope": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES={**__import__("django.conf").conf.settings.CACHES, **extra}):
        assert ours.render(Context()) == theirs.render(Context()) == "x"


@pytest.mark.slow
def test_tag_stampede_renders_once():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.3)
        return "fragment"

    src = "{% dogpile_cache 60 hot %}{{ slow }}{% enddogpile_cache %}"
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_locmem"}):
        t = Template("{% load dogpile %}" + src)
        results = run_concurrently(10, lambda i: t.render(Context({"slow": slow})))
    assert results == ["fragment"] * 10
    assert len(calls) == 1


# --- dogpile_cache_page ----------------------------------------------------


def test_page_cached_with_django_headers_and_status():
    c = Client()
    r1 = c.get("/page/")
    r2 = c.get("/page/")
    assert r1.content == r2.content == b"page 1"
    assert r1["X-Dogpile-Cache"] == "MISS" and r2["X-Dogpile-Cache"] == "HIT"
    assert "max-age=60" in r2["Cache-Control"] and r2.has_header("Expires")
    assert r2["Age"] == "0"
    assert urls.CALLS["n"] == 1
    assert c.head("/page/")["X-Dogpile-Cache"] == "HIT"


def test_stale_page_says_so():
    c = Client()
    with Clock() as clock:
        c.get("/page/")
        clock.advance(61)
        # another request holds the regeneration: this one gets the stale page
        from django_dogpile.engine.locks import key_lock

        keys = [k for k in caches["locmem"]._cache if "dogpile.page" in k and ".GET." in k]
        made = [k.split(":", 2)[2] for k in keys]
        locks = [key_lock(("locmem", m)) for m in made]
        for lk in locks:
            lk.lock.acquire()
        try:
            r = c.get("/page/")
        finally:
            for lk in locks:
                lk.lock.release()
    assert r["X-Dogpile-Cache"] == "UPDATING"
    assert r.content == b"page 1"
    assert int(r["Age"]) > 60  # older than its max-age: visibly stale


def test_non_get_and_non_200_and_streaming_never_cached():
    c = Client()
    c.post("/page/")
    c.post("/page/")
    assert urls.CALLS["n"] == 2
    c.get("/status/?code=500")
    c.get("/status/?code=500")
    assert urls.CALLS["n"] == 4
    r = c.get("/stream/")
    assert b"".join(r.streaming_content) == b"ab"
    c.get("/stream/")
    assert urls.CALLS["n"] == 6


def test_private_and_cookie_setting_responses_never_cached():
    c = Client()
    c.get("/private/")
    c.get("/private/")
    c.get("/cookie/")
    c.get("/cookie/")
    assert urls.CALLS["n"] == 4


@pytest.mark.slow
def test_uncacheable_page_does_not_queue_requests_on_the_lock():
    """Hit-for-miss: once a page said "private", requests run side by side."""
    Client().get("/private/?sleep=0.3")
    started = time.monotonic()
    responses = run_concurrently(6, lambda i: Client().get("/private/?sleep=0.3"))
    took = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 6
    assert urls.CALLS["n"] == 7
    assert took < 1.0, took  # queued one behind another it would be 1.8 s


def test_page_that_becomes_cacheable_is_stored_again():
    c = Client()
    assert c.get("/sometimes-private/").content == b"call 1"  # private: not stored
    second = c.get("/sometimes-private/")
    assert second.content == b"call 2" and second["X-Dogpile-Cache"] == "MISS"
    third = c.get("/sometimes-private/")
    assert third.content == b"call 2" and third["X-Dogpile-Cache"] == "HIT"
    assert urls.CALLS["n"] == 2


def test_page_on_a_cache_that_never_expires_is_cached():
    """timeout None falls to the cache's TIMEOUT None: forever, as Django's cache_page."""
    caches["dp_forever"].clear()
    c = Client()
    first, second = c.get("/forever/"), c.get("/forever/")
    assert first.content == second.content == b"forever 1"
    assert second["X-Dogpile-Cache"] == "HIT"


def test_vary_is_honoured():
    c = Client()
    assert c.get("/varies/", headers={"accept-language": "fr"}).content == b"lang fr"
    assert c.get("/varies/", headers={"accept-language": "de"}).content == b"lang de"
    assert c.get("/varies/", headers={"accept-language": "fr"}).content == b"lang fr"
    assert c.get("/varies/", headers={"accept-language": "de"}).content == b"lang de"
    # the first response is stored under the key its Vary gives: one per language
    assert urls.CALLS["n"] == 2


def test_logged_in_page_never_served_to_anonymous():
    User.objects.filter(username="alice").delete()
    User.objects.create_user("alice", password="pw")
    alice = Client()
    alice.login(username="alice", password="pw")
    assert alice.get("/whoami/").content == b"hello alice"
    assert alice.get("/whoami/").content == b"hello alice"
    anon = Client()
    assert anon.get("/whoami/").content == b"hello anonymous"
    assert anon.get("/whoami/").content == b"hello anonymous"
    assert alice.get("/whoami/").content == b"hello alice"


def test_authorization_adds_vary():
    c = Client()
    r = c.get("/page/", headers={"authorization": "Bearer x"})
    assert "Authorization" in r["Vary"]


def test_class_based_view_and_wraps():
    c = Client()
    assert c.get("/class/").content == b"class"
    assert c.get("/class/").content == b"class"
    assert urls.CALLS["n"] == 1
    assert urls.page.__name__ == "page" and urls.page.__doc__ == "A page view."


@pytest.mark.slow
def test_concurrent_requests_run_the_view_once():
    c = Client()
    results = run_concurrently(10, lambda i: Client().get("/page/?sleep=0.3").content)
    assert results == [b"page 1"] * 10
    assert urls.CALLS["n"] == 1
    with Clock() as clock:
        clock.advance(61)
        statuses = run_concurrently(10, lambda i: Client().get("/page/?sleep=0.3")["X-Dogpile-Cache"])
    assert urls.CALLS["n"] == 2
    assert sorted(statuses) == ["EXPIRED"] + ["UPDATING"] * 9
    del c


@pytest.mark.slow
def test_async_view_concurrent_once():
    async def main():
        client = AsyncClient()
        return await asyncio.gather(*(client.get("/async/?sleep=0.2") for _ in range(8)))

    responses = asyncio.run(main())
    assert [r.content for r in responses] == [b"async"] * 8
    assert urls.CALLS["n"] == 1


# --- cached() ----------------------------------------------------------------


def test_cached_function():
    calls = []

    @cached(60, cache="dp_locmem")
    def square(x, *, plus=0):
        """Square it."""
        calls.append(x)
        return x * x + plus

    assert square(3) == 9 and square(3) == 9
    assert square(3, plus=1) == 10
    assert calls == [3, 3]
    assert square.__doc__ == "Square it."
    assert square.invalidate(3)
    assert square(3) == 9 and calls == [3, 3, 3]
    assert square.refresh(3) == 9 and calls == [3, 3, 3, 3]
    with pytest.raises(TypeError, match="key="):
        square(threading.Lock())


def test_cached_custom_key_and_async():
    @cached(60, cache="dp_locmem", key=lambda obj: obj["id"])
    def load(obj):
        return obj["id"] * 2

    assert load({"id": 2}) == 4

    @cached(60, cache="dp_locmem")
    async def fetch(x):
        await asyncio.sleep(0)
        return x + 1

    assert asyncio.run(fetch(1)) == 2


@pytest.mark.slow
def test_cached_stampede_once():
    calls = []

    @cached(60, cache="dp_locmem")
    def slow():
        calls.append(1)
        time.sleep(0.3)
        return "v"

    assert run_concurrently(10, lambda i: slow()) == ["v"] * 10
    assert len(calls) == 1


@pytest.mark.redis
@pytest.mark.slow
def test_faces_over_redis():
    calls = []

    @cached(60, cache="dp_redis")
    def slow():
        calls.append(1)
        time.sleep(0.3)
        return "v"

    caches["dp_redis"].clear()
    assert run_concurrently(10, lambda i: slow()) == ["v"] * 10
    assert len(calls) == 1
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_redis"}):
        t = Template("{% load dogpile %}{% dogpile_cache 60 r %}{{ f }}{% enddogpile_cache %}")
        hits = []
        f = lambda: hits.append(1) or "frag"  # noqa: E731
        assert run_concurrently(6, lambda i: t.render(Context({"f": f}))) == ["frag"] * 6
    assert len(hits) == 1


def test_cached_async_function_has_async_invalidate_and_refresh():
    calls = []

    @cached(60, cache="dp_db")
    async def fetch(x):
        calls.append(x)
        return x * 10

    async def main():
        assert await fetch(2) == 20 and await fetch(2) == 20
        assert await fetch.ainvalidate(2) is True  # off the loop: the db store works
        assert await fetch(2) == 20
        assert await fetch.arefresh(2) == 20
        with pytest.raises(TypeError, match="arefresh"):
            fetch.refresh(2)  # inside a loop: say what to use
        return calls

    from asgiref.sync import async_to_sync

    assert async_to_sync(main)() == [2, 2, 2]
    assert fetch.refresh(2) == 20 and calls == [2, 2, 2, 2]  # outside a loop: awaited
    caches["dp_db"].clear()


def test_cached_sync_function_arefresh_runs_it_off_the_loop():
    threads = []

    @cached(60, cache="dp_locmem")
    def load():
        threads.append(threading.current_thread())
        return "v"

    async def main():
        return await load.arefresh(), threading.current_thread()

    from asgiref.sync import async_to_sync

    value, loop_thread = asyncio.run(main())
    assert value == "v" and threads and threads[0] is not loop_thread
    assert async_to_sync(load.ainvalidate)() is True


def test_one_call_spelled_three_ways_is_one_entry():
    """Arguments are bound to the signature: positional, keyword and a
    default spelled out are one call, so one invalidate() covers them."""
    calls = []

    @cached(60, cache="dp_locmem")
    def totals(year, scope="all", *extra, **options):
        calls.append((year, scope, extra, options))
        return f"{year}/{scope}/{len(calls)}"

    first = totals(2026)
    assert totals(year=2026) == totals(2026, "all") == totals(2026, scope="all") == first
    assert calls == [(2026, "all", (), {})]
    assert totals.key_for(2026) == totals.key_for(year=2026) == totals.key_for(2026, "all")
    assert totals(2026, "mine") != first  # another call
    assert totals(2026, "all", a=1, b=2) == totals(2026, "all", b=2, a=1)
    assert totals.invalidate(year=2026)
    second = totals(2026, scope="all")  # regenerated once, for every spelling
    assert second != first and totals(2026) == second
    with pytest.raises(TypeError, match="totals"):
        totals()  # as the call itself would fail


def test_tag_timeout_none_means_forever_as_with_djangos_tag():
    """{% cache None ... %} stores forever (Django sets timeout=None); so does
    {% dogpile_cache None ... %}, whatever the alias's TIMEOUT."""
    Template('{% load cache %}{% cache None f using="locmem" %}x{% endcache %}').render(Context())
    djangos = caches["locmem"]
    assert djangos._expire_info[djangos.make_key(make_fragment_key("f"))] is None
    with Clock() as clock:
        render('{% dogpile_cache None "f" %}{{ n }}{% enddogpile_cache %}', n=1)
        clock.advance(10**7)  # far past the alias's TIMEOUT and GRACE
        assert render('{% dogpile_cache None "f" %}{{ n }}{% enddogpile_cache %}', n=2) == "1"
    record = caches["dp_locmem"].store.get(caches["dp_locmem"].make_and_validate_key(make_fragment_key("f")))
    assert record[2] is None  # never stale


def test_defaults_that_cannot_be_pickled_or_hash_per_process_still_make_one_key():
    """A default is not part of the key: a lambda default never has to be
    pickled, and a frozenset default (whose pickle follows the process's
    string hashing) gives every worker process the same key."""
    import subprocess
    import sys

    @cached(60, cache="dp_locmem")
    def report(year, sort_key=lambda row: row):
        return year

    assert report(2026) == 2026 and report.key_for(2026) == report.key_for(year=2026)
    script = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "import django; django.setup()\n"
        "from django_dogpile.decorators import cached\n"
        "@cached(60, cache='dp_locmem')\n"
        "def totals(year, kinds=frozenset({'sales', 'refunds', 'fees', 'tax'})): return year\n"
        "print(totals.key_for(2026), totals.key_for(2026, kinds={'tax', 'fees', 'refunds', 'sales'} and "
        "frozenset({'fees', 'tax', 'sales', 'refunds'})), totals.key_for(2026, {'b', 'a'}))\n"
    )
    keys = set()
    for seed in ("1", "2", "3", "4"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**__import__("os").environ, "PYTHONHASHSEED": seed},
        )
        assert out.returncode == 0, out.stderr
        keys.add(out.stdout)
    assert len(keys) == 1, keys
    first, default_spelled, other = keys.pop().split()
    assert first == default_spelled != other

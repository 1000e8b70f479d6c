"""A page found by its URL: every stored variant of a page (host, language,
the headers it varies on) listed, inspected and invalidated from its path,
through the page decorator and the per-site cache."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from django_dogpile.pages import invalidate_page, page_keys
from django_dogpile.testing import run_concurrently
from tests.helpers import site_worker
from tests.helpers.page_urls import CALLS
from tests.settings import FULL_STACK


@pytest.fixture(autouse=True)
def stack():
    caches["dp_locmem"].clear()
    CALLS.clear()
    with override_settings(ROOT_URLCONF="tests.helpers.page_urls", MIDDLEWARE=FULL_STACK):
        yield


def get(path: str, language: str):
    return Client(headers={"accept-language": language}).get(path)


def test_every_variant_of_a_page_is_found_by_its_path_or_url():
    for language in ("en", "fr", "en"):
        get("/dl/varies/", language)
    keys = page_keys("/dl/varies/", cache="dp_locmem")
    assert len(keys) == 2  # en and fr
    assert page_keys("http://testserver/dl/varies/", cache="dp_locmem") == keys
    assert page_keys("/dl/varies/?other=1", cache="dp_locmem") == []
    assert all(caches["dp_locmem"].has_key(key) for key in keys)


def test_invalidating_a_page_makes_each_variant_stale_once():
    for language in ("en", "fr"):
        get("/dl/varies/", language)
    assert CALLS["varies"] == 2
    assert invalidate_page("/dl/varies/", cache="dp_locmem") == 2
    first = get("/dl/varies/", "en")
    assert first["X-Dogpile-Cache"] == "EXPIRED"  # this request regenerated it
    assert get("/dl/varies/", "en")["X-Dogpile-Cache"] == "HIT"
    assert get("/dl/varies/", "fr")["X-Dogpile-Cache"] == "EXPIRED"
    assert CALLS["varies"] == 4
    assert invalidate_page("/nothing/", cache="dp_locmem") == 0


def test_a_hard_invalidation_deletes_the_variants():
    get("/dl/varies/", "en")
    assert invalidate_page("/dl/varies/", cache="dp_locmem", hard=True) == 1
    assert get("/dl/varies/", "en")["X-Dogpile-Cache"] == "MISS"


def test_variants_stored_at_once_are_all_noted():
    """Eight languages regenerated concurrently: the note is written under
    the key's lock, so none of the eight is lost."""
    run_concurrently(8, lambda i: get("/dl/varies/", f"l{i}"))
    assert len(page_keys("/dl/varies/", cache="dp_locmem")) == 8


def test_the_per_site_cache_pages_are_found_with_its_key_prefix():
    with override_settings(
        MIDDLEWARE=site_worker.middleware(site_worker.OURS),
        ROOT_URLCONF="tests.helpers.site_urls",
        CACHE_MIDDLEWARE_ALIAS="dp_locmem",
        CACHE_MIDDLEWARE_SECONDS=60,
        CACHE_MIDDLEWARE_KEY_PREFIX="site",
    ):
        get("/plain/", "en")
        get("/plain/", "fr")
    # one per language: the update half stores the first page only once it
    # knows the Vary that LocaleMiddleware adds (Accept-Language)
    assert len(page_keys("/plain/", cache="dp_locmem", key_prefix="site")) == 2
    assert page_keys("/plain/", cache="dp_locmem") == []  # another face's prefix


def test_the_command_inspects_and_invalidates_a_page_by_its_path(capsys):
    for language in ("en", "fr"):
        get("/dl/varies/", language)
    call_command("dogpile", "inspect", "/dl/varies/", "--alias", "dp_locmem")
    out = capsys.readouterr().out
    assert "page /dl/varies/ in dp_locmem: 2 stored variant(s)" in out
    assert out.count("fresh for") == 2
    call_command("dogpile", "invalidate", "/dl/varies/", "--alias", "dp_locmem")
    assert "2 variant(s) invalidated" in capsys.readouterr().out
    call_command("dogpile", "inspect", "/dl/varies/", "--alias", "dp_locmem")
    assert capsys.readouterr().out.count("stale (invalidated)") == 2
    with pytest.raises(CommandError, match="nothing was invalidated"):
        call_command("dogpile", "invalidate", "/no-such-page/", "--alias", "dp_locmem")
    call_command("dogpile", "inspect", "/no-such-page/", "--alias", "dp_locmem")
    assert "0 stored variant(s)" in capsys.readouterr().out


def test_the_note_lives_as_long_as_the_pages_it_lists():
    """A page regenerated under traffic: the note of its variants is renewed
    (found by a reviewer: it expired after TIMEOUT + GRACE while its pages
    lived on, and invalidate_page then found none)."""
    from django.conf import settings

    from django_dogpile.testing import Clock

    short = {**settings.CACHES["dp_locmem"], "OPTIONS": {"GRACE": 10, "LOCK_TIMEOUT": 5}}
    with (
        override_settings(
            CACHES={**settings.CACHES, "dp_short": short},
            MIDDLEWARE=site_worker.middleware(site_worker.OURS),
            ROOT_URLCONF="tests.helpers.site_urls",
            CACHE_MIDDLEWARE_ALIAS="dp_short",
            CACHE_MIDDLEWARE_SECONDS=30,
            CACHE_MIDDLEWARE_KEY_PREFIX="short",
        ),
        Clock() as clock,
    ):
        caches["dp_short"].clear()
        get("/plain/", "en")
        for _ in range(4):
            clock.advance(35)  # stale (fresh 30 s, servable 10 s more): regenerated
            assert get("/plain/", "en")["X-Dogpile-Cache"] == "EXPIRED"
        assert len(page_keys("/plain/", cache="dp_short", key_prefix="short")) == 1
        assert invalidate_page("/plain/", cache="dp_short", key_prefix="short") == 1


def test_a_path_is_found_encoded_or_not():
    from django_dogpile.faces.page_index import index_key

    assert index_key("/café/") == index_key("/caf%C3%A9/") == index_key("http://x/caf%C3%A9/")
    get("/dl/plain/?q=1", "en")
    assert page_keys("/dl/plain/?q=1", cache="dp_locmem")
    assert page_keys("http://testserver/dl/plain/?q=1", cache="dp_locmem")


@pytest.mark.redis
def test_noting_new_variants_on_redis_logs_no_lease_warning(redis_server, caplog):
    """The note is written under a lock of its own: a write to the note
    itself revoked its lease, and every new variant logged a WARNING."""
    caches["dp_redis"].clear()
    with override_settings(ROOT_URLCONF="tests.helpers.page_urls"), caplog.at_level("WARNING"):
        for language in ("en", "fr", "de"):
            get("/dr/varies/", language)
    assert len(page_keys("/dr/varies/", cache="dp_redis")) == 3
    assert not [r for r in caplog.records if "lease" in r.getMessage()]


def test_a_url_with_more_variants_than_the_note_keeps_is_invalidated_whole(monkeypatch):
    """Past INDEX_SIZE variants the note keeps the most recent only; the URL
    is marked (the variants stored before the mark stay listed) and its
    later variants carry the URL's own tag: every one is still reached."""
    from django_dogpile.faces import page_index

    monkeypatch.setattr(page_index, "INDEX_SIZE", 4)
    languages = [f"x{i}" for i in range(12)]
    for language in languages:
        assert get("/dl/varies/", language)["X-Dogpile-Cache"] == "MISS"
    # the 4 from before the mark, and the 4 most recent
    assert len(page_keys("/dl/varies/", cache="dp_locmem")) == 8
    assert invalidate_page("/dl/varies/", cache="dp_locmem") == 8
    statuses = [get("/dl/varies/", language)["X-Dogpile-Cache"] for language in languages]
    assert statuses == ["EXPIRED"] * 12
    assert [get("/dl/varies/", language)["X-Dogpile-Cache"] for language in languages] == ["HIT"] * 12
    # a hard one reaches them all too
    invalidate_page("/dl/varies/", cache="dp_locmem", hard=True)
    assert {get("/dl/varies/", language)["X-Dogpile-Cache"] for language in languages} == {"MISS"}

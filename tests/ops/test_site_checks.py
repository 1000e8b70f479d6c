"""The checks that say when a site caches pages without the dogpile face:
Django's per-site cache or ``cache_page`` over a DogpileCache alias
(``W006``), and our per-site cache over an alias that is not one (``W003``)."""

from __future__ import annotations

from django.test import override_settings

from django_dogpile.checks import check_djangos_cache_faces, check_faces_use_dogpile
from tests.helpers import site_urls


def ids(found):
    return [(w.id, w.obj) for w in found]


def test_djangos_per_site_cache_over_a_dogpile_alias_is_warned():
    with override_settings(
        MIDDLEWARE=site_urls.middleware(site_urls.DJANGOS), CACHE_MIDDLEWARE_ALIAS="dp_locmem"
    ):
        found = check_djangos_cache_faces()
    assert ids(found) == [("django_dogpile.W006", "dp_locmem")]
    assert "django_dogpile.middleware.UpdateCacheMiddleware" in found[0].hint
    assert "django_dogpile.middleware.FetchFromCacheMiddleware" in found[0].hint


def test_djangos_per_site_cache_over_a_plain_alias_is_left_alone():
    with override_settings(
        MIDDLEWARE=site_urls.middleware(site_urls.DJANGOS), CACHE_MIDDLEWARE_ALIAS="locmem"
    ):
        assert check_djangos_cache_faces() == []


def test_our_per_site_cache_is_not_warned_about():
    with override_settings(
        MIDDLEWARE=site_urls.middleware(site_urls.OURS), CACHE_MIDDLEWARE_ALIAS="dp_locmem"
    ):
        assert check_djangos_cache_faces() == []
        assert [w for w in check_faces_use_dogpile() if "per-site" in w.msg] == []


def test_our_per_site_cache_over_a_plain_alias_is_w003():
    with override_settings(MIDDLEWARE=site_urls.middleware(site_urls.OURS), CACHE_MIDDLEWARE_ALIAS="locmem"):
        found = [w for w in check_faces_use_dogpile() if "per-site" in w.msg]
    assert ids(found) == [("django_dogpile.W003", "locmem")]


def test_djangos_cache_page_over_a_dogpile_alias_is_warned_by_route():
    with override_settings(ROOT_URLCONF="tests.helpers.djangos_cache_page_urls"):
        found = check_djangos_cache_faces()
    assert ids(found) == [("django_dogpile.W006", "reports/report/")]
    assert 'dogpile_cache_page(..., cache="dp_locmem")' in found[0].hint

"""Settings as one rule: every numeric setting read as Django reads TIMEOUT,
the same message from ``manage.py check`` and from the backend, every
backend error naming its alias, decorator timeouts checked when decorating.

No mocks: real locmem aliases under ``override_settings``.
"""

from __future__ import annotations

import math

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from django_dogpile.cache import DogpileCache
from django_dogpile.checks import check_caches, check_dogpile_setting
from django_dogpile.conf import get_config
from django_dogpile.decorators import cached, dogpile_cache_page

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
DP = "django_dogpile.cache.DogpileCache"


def caches_with(**dp):
    return {"default": LOCMEM, "store": LOCMEM, "dp": {"BACKEND": DP, "LOCATION": "store", **dp}}


def options(**opts):
    return caches_with(OPTIONS=opts)


def near(**keys):
    return caches_with(OPTIONS={"NEAR_CACHE": keys})


# --- numeric strings, as from environment variables -------------------------


@pytest.mark.parametrize(
    "conf, read, expected",
    [
        (options(GRACE="600"), lambda c: c.options.grace, 600.0),
        (options(GRACE=" 0.5 "), lambda c: c.options.grace, 0.5),  # as float() reads it
        (options(LOCK_TIMEOUT="0.5"), lambda c: c.options.lock_timeout, 0.5),
        (options(WAIT_TIMEOUT="10"), lambda c: c.options.wait_timeout, 10.0),
        (options(BACKGROUND_WORKERS="8"), lambda c: c.options.background_workers, 8),
        (options(KEY_STATS="200"), lambda c: c.options.key_stats, 200),
        (options(RETRY_AFTER="1.5"), lambda c: c.options.retry_after, 1.5),
        (options(EARLY_REFRESH="1.5"), lambda c: c.options.early_refresh, 1.5),
        (near(MAX_ENTRIES="10"), lambda c: c.options.near_cache[0], 10),
        (near(MAX_BYTES="4096"), lambda c: c.options.near_cache[1], 4096),
        (near(MAX_AGE="0.5"), lambda c: c.options.near_cache[2], 0.5),
    ],
)
def test_every_numeric_option_takes_a_numeric_string(conf, read, expected):
    with override_settings(CACHES=conf):
        assert check_caches() == []
        cache = caches["dp"]
        cache.set("k", "v")  # the backend works: no error kept for first use
        assert cache.get("k") == "v"
        value = read(cache)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "dogpile, key, expected",
    [
        ({"STATS_INTERVAL": "5"}, "STATS_INTERVAL", 5),
        ({"STATS_INTERVAL": "0.5"}, "STATS_INTERVAL", 0.5),
    ],
)
def test_the_dogpile_setting_takes_numeric_strings_too(dogpile, key, expected):
    with override_settings(CACHES=caches_with(), DOGPILE=dogpile):
        assert check_dogpile_setting() == []
        assert get_config()[key] == expected


# --- one message, at check time and at run time -----------------------------


@pytest.mark.parametrize(
    "conf, named, check_id",
    [
        (caches_with(TIMEOUT="soon"), "TIMEOUT", "E003"),
        (options(GRACE="ten"), "OPTIONS['GRACE']", "E005"),
        (options(GRACE="-1"), "OPTIONS['GRACE']", "E005"),
        (options(LOCK_TIMEOUT="0"), "OPTIONS['LOCK_TIMEOUT']", "E006"),
        (options(LOCK_TIMEOUT="inf"), "OPTIONS['LOCK_TIMEOUT']", "E006"),
        (options(WAIT_TIMEOUT="soon"), "OPTIONS['WAIT_TIMEOUT']", "E007"),
        (options(BACKGROUND_WORKERS="4.5"), "OPTIONS['BACKGROUND_WORKERS']", "E008"),
        (options(BACKGROUND_WORKERS="0"), "OPTIONS['BACKGROUND_WORKERS']", "E008"),
        (options(KEY_STATS="1.5"), "OPTIONS['KEY_STATS']", "E008"),
        (options(KEY_STATS=True), "OPTIONS['KEY_STATS']", "E008"),
        (options(RETRY_AFTER="nan"), "OPTIONS['RETRY_AFTER']", "E008"),
        (options(EARLY_REFRESH="yes"), "OPTIONS['EARLY_REFRESH']", "E008"),
        (near(MAX_ENTRIES="4.5"), "OPTIONS['NEAR_CACHE']['MAX_ENTRIES']", "E008"),
        (near(MAX_BYTES="0"), "OPTIONS['NEAR_CACHE']['MAX_BYTES']", "E008"),
        (near(MAX_AGE="0"), "OPTIONS['NEAR_CACHE']['MAX_AGE']", "E008"),
        (options(ASYNC_POOL={"MAX_CONNECTIONS": 0}), "OPTIONS['ASYNC_POOL']['MAX_CONNECTIONS']", "E008"),
        (options(ASYNC_POOL={"MAX_CONNECTIONS": 2.5}), "OPTIONS['ASYNC_POOL']['MAX_CONNECTIONS']", "E008"),
        (options(ASYNC_POOL={"TIMEOUT": "soon"}), "OPTIONS['ASYNC_POOL']['TIMEOUT']", "E008"),
    ],
)
def test_a_bad_number_is_one_message_at_check_and_at_run_time(conf, named, check_id):
    with override_settings(CACHES=conf):
        [error] = check_caches()
        with pytest.raises(ImproperlyConfigured) as raised:
            caches["dp"].get("k")
    assert error.id == f"django_dogpile.{check_id}"
    msg = error.msg.removeprefix("CACHES['dp']: ")
    assert msg != error.msg and msg.startswith(f"{named} must be "), error.msg
    assert str(raised.value) == f"DogpileCache 'dp': {msg} (hint: {error.hint}) [{error.id}]"


def test_the_dogpile_setting_says_the_same_at_check_and_at_run_time():
    with override_settings(CACHES=caches_with(), DOGPILE={"STATS_INTERVAL": "often"}):
        [error] = check_dogpile_setting()
        with pytest.raises(ImproperlyConfigured) as raised:
            get_config()
    assert error.id == "django_dogpile.E012"
    assert error.msg == "DOGPILE['STATS_INTERVAL'] must be a number of seconds >= 0, not 'often'."
    assert str(raised.value) == f"{error.msg} {error.hint}"


# --- every backend error names its alias ------------------------------------


@pytest.mark.parametrize(
    "conf, says",
    [
        (options(GRAVE=1), "Unknown OPTIONS keys: 'GRAVE'."),
        (options(GRACE=math.nan), "OPTIONS['GRACE'] must be"),
        (options(ASYNC_POOL={"SIZE": 5}), "OPTIONS['ASYNC_POOL'] is {'SIZE': 5}."),
        (options(ASYNC_POOL="yes"), "OPTIONS['ASYNC_POOL'] is 'yes'."),
        (caches_with(TIMEOUT=-5), "TIMEOUT must be None or a number of seconds >= 0, not -5."),
        (caches_with(LOCATION=""), "LOCATION must name the cache alias that stores the data"),
    ],
)
def test_every_configuration_error_names_the_alias(conf, says):
    with override_settings(CACHES=conf):
        with pytest.raises(ImproperlyConfigured) as raised:
            caches["dp"].set("k", 1)
    assert str(raised.value).startswith(f"DogpileCache 'dp': {says}"), raised.value


def test_twin_aliases_and_a_backend_made_by_hand_are_named_too():
    bad = {"BACKEND": DP, "LOCATION": "store", "OPTIONS": {"GRACE": "soon"}}
    with override_settings(CACHES={"default": LOCMEM, "store": LOCMEM, "a": bad, "b": dict(bad)}):
        with pytest.raises(ImproperlyConfigured, match=r"^DogpileCache 'b': OPTIONS\['GRACE'\]"):
            caches["b"].get("k")
    with pytest.raises(ImproperlyConfigured, match=r"^DogpileCache 'dogpile:locmem': Unknown OPTIONS"):
        DogpileCache("locmem", {"OPTIONS": {"GRAVE": 1}}).get("k")


# --- decorator timeouts, checked when decorating ------------------------------


def view(request):
    return HttpResponse("page")


def test_a_page_timeout_string_fails_when_decorating_where_djangos_cache_page_fails_per_request():
    from django.views.decorators.cache import cache_page

    with override_settings(CACHES=caches_with()):
        djangos = cache_page("60", cache="store")(view)  # decorates...
        with pytest.raises(TypeError):  # ...and fails on every request
            djangos(RequestFactory().get("/settings-as-one-rule"))
    with pytest.raises(TypeError) as raised:
        dogpile_cache_page("60", cache="dp_locmem")(view)
    assert str(raised.value) == (
        f"dogpile_cache_page(timeout) on {__name__}.view: timeout must be None or a number "
        "of seconds, not '60'. Pass seconds (60, not '60') or None."
    )


@pytest.mark.parametrize("timeout", ["60", True, math.nan, math.inf, [60]])
def test_dogpile_cache_page_checks_its_timeout_when_decorating(timeout):
    with pytest.raises(TypeError, match=rf"^dogpile_cache_page\(timeout\) on {__name__}\.view: timeout"):
        dogpile_cache_page(timeout, cache="dp_locmem")(view)
    for fine in (60, 0.5, 0, -1, None):  # as cache_page takes them
        assert callable(dogpile_cache_page(fine, cache="dp_locmem")(view))


@pytest.mark.parametrize("timeout", ["60", True, math.nan])
def test_cached_checks_its_timeout_when_decorating(timeout):
    def report():
        return 1

    with pytest.raises(TypeError) as raised:
        cached(timeout, cache="dp")(report)
    name = f"{__name__}.test_cached_checks_its_timeout_when_decorating.<locals>.report"
    assert str(raised.value).startswith(f"cached(timeout) on {name}: timeout must be None or a number")
    with override_settings(CACHES=caches_with()):
        for fine in (60, 0.5, 0, None, math.inf):  # as get_or_set takes them (inf: forever)
            assert cached(fine, cache="dp")(report)() == 1

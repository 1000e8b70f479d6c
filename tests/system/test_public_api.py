"""The public import paths and what each exports, pinned: a move inside
the package must not change them (issue #20).  A name added to a public
module is added here on purpose; one removed is a breaking change."""

from __future__ import annotations

import importlib

import pytest
from django.core.management import get_commands, load_command_class

PUBLIC = {
    "django_dogpile": [
        "Dogpile",
        "Lock",
        "LockError",
        "NameRegistry",
        "NeedRegenerationException",
        "ReadWriteMutex",
        "SyncReaderDogpile",
    ],
    "django_dogpile.core": [
        "Dogpile",
        "Lock",
        "LockError",
        "NameRegistry",
        "NeedRegenerationException",
        "ReadWriteMutex",
        "SyncReaderDogpile",
    ],
    "django_dogpile.cache": ["DogpileCache", "LOCK_SUFFIX"],
    "django_dogpile.decorators": [
        "CachedFunction",
        "cached",
        "cached_many",
        "dogpile_cache_page",
        "uncacheable",
    ],
    "django_dogpile.templatetags.dogpile": [
        "DogpileCacheNode",
        "detached_request",
        "do_dogpile_cache",
        "do_dogpile_prefetch",
        "snapshot",
    ],
    "django_dogpile.testing": [
        "Clock",
        "StoreContract",
        "another_process",
        "assert_single_regeneration",
        "run_concurrently",
    ],
    "django_dogpile.stats": ["COUNTERS", "KeyStats", "Stats", "get_key_stats", "get_stats", "reset_stats"],
    "django_dogpile.signals": [
        "caller_waited",
        "regeneration_failed",
        "stale_served",
        "tags_invalidated",
        "value_regenerated",
    ],
    "django_dogpile.invalidation": [
        "ainvalidate_tags",
        "invalidate_on_change",
        "invalidate_page",
        "invalidate_tags",
    ],
    "django_dogpile.exceptions": ["UncacheableValue", "WaitTimeout"],
    "django_dogpile.results": ["CacheResult", "dont_store", "expires_in"],
    "django_dogpile.prometheus": ["DogpileCollector", "metrics_view"],
    "django_dogpile.otel": ["apply", "available", "check_installed", "disable", "enable", "enabled"],
    "django_dogpile.toolbar": ["DogpilePanel"],
    "django_dogpile.toolbar.panel": ["DogpilePanel"],
    "django_dogpile.toolbar.recorder": ["Recording", "install", "installed", "recording", "start", "stop"],
    "django_dogpile.pages": [
        "REASONS",
        "dogpile_cache_page",
        "invalidate_page",
        "own_csrf_flag",
        "page_keys",
        "per_visitor",
        "uncacheable",
    ],
    "django_dogpile.middleware": ["CacheMiddleware", "FetchFromCacheMiddleware", "UpdateCacheMiddleware"],
    "django_dogpile.faces": ["make_fragment_key"],
    "django_dogpile.apps": ["DogpileConfig", "warn_if_not_installed"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_each_public_module_exports_exactly_its_names(module):
    found = importlib.import_module(module)
    assert sorted(found.__all__) == sorted(PUBLIC[module])
    for name in found.__all__:
        assert getattr(found, name) is not None, name


def test_the_core_is_dogpile_core_by_name_and_object():
    import django_dogpile
    import django_dogpile.core as core

    for name in PUBLIC["django_dogpile.core"]:
        assert getattr(django_dogpile, name) is getattr(core, name)


def test_the_management_command_and_the_template_library_load():
    assert get_commands()["dogpile"] == "django_dogpile"
    assert load_command_class("django_dogpile", "dogpile").help
    from django.template import engines

    assert "dogpile" in engines["django"].engine.template_libraries


def test_the_backend_path_in_caches_is_the_documented_one():
    from django.core.cache.backends.base import BaseCache

    from django_dogpile.cache import DogpileCache

    assert DogpileCache.__module__ == "django_dogpile.cache"
    assert issubclass(DogpileCache, BaseCache)
    # composition, not mixins: Django's BaseCache is the only base
    assert DogpileCache.__bases__ == (BaseCache,)

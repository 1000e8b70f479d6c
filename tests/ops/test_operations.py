"""What operators meet: checks on odd settings, counters in forked workers,
and which alias a backend is (twins, subclasses)."""

from __future__ import annotations

import multiprocessing

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import override_settings

from django_dogpile import signals
from django_dogpile.conf import dogpile_aliases
from django_dogpile.stats import get_stats, reset_stats
from tests.helpers.procs import fork_after_use

SPAWN = multiprocessing.get_context("spawn")


def _dp(location, prefix="", **options):
    return {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": location,
        "TIMEOUT": 300,
        "KEY_PREFIX": prefix,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, **options},
    }


def test_check_deploy_reports_a_list_location_instead_of_crashing():
    with override_settings(CACHES={**settings.CACHES, "dp_list": {**_dp("locmem"), "LOCATION": ["locmem"]}}):
        found = [m for m in run_checks(include_deployment_checks=True) if m.obj == "dp_list"]
    assert [m.id for m in found] == ["django_dogpile.E001"]


@pytest.mark.redis
def test_a_worker_forked_after_use_counts_and_publishes_on_its_own(redis_server):
    """gunicorn --preload with a warm-up: the worker starts its counters at
    zero and publishes them under its own pid (the parent's publisher thread
    does not survive the fork)."""
    results = SPAWN.Queue()
    p = SPAWN.Process(target=fork_after_use, args=("dp_redis", 5, results))
    p.start()
    got = results.get(timeout=60)
    p.join(30)
    assert got["parent"] == 5
    assert got["inherited"] == 0
    assert list(got["published"].values()) == [2]


def test_aliases_set_alike_over_one_store_each_count_as_themselves():
    calls = []

    def seen(sender, alias, key, **kwargs):
        calls.append(alias)

    with override_settings(
        CACHES={
            **settings.CACHES,
            "dp_grace_a": _dp("locmem", "same", GRACE=60),
            "dp_grace_b": _dp("locmem", "same", GRACE=120),
            "dp_twin_1": _dp("locmem", "twin"),
            "dp_twin_2": _dp("locmem", "twin"),
        }
    ):
        signals.value_regenerated.connect(seen, dispatch_uid="alias-identity")
        try:
            reset_stats()
            for alias in ("dp_grace_a", "dp_grace_b", "dp_twin_1", "dp_twin_2"):
                cache = caches[alias]
                cache.delete(f"k-{alias}")
                cache.get_or_set(f"k-{alias}", "v")
                assert cache.alias == alias
            assert calls == ["dp_grace_a", "dp_grace_b", "dp_twin_1", "dp_twin_2"]
            caches["dp_grace_b"].get_or_set("k-dp_grace_b", "v")
            caches["dp_twin_2"].get_or_set("k-dp_twin_2", "v")
            assert get_stats("dp_grace_a")["HIT"] == 0 and get_stats("dp_grace_b")["HIT"] == 1
            assert get_stats("dp_twin_1")["HIT"] == 0 and get_stats("dp_twin_2")["HIT"] == 1
        finally:
            signals.value_regenerated.disconnect(dispatch_uid="alias-identity")


def test_a_dogpilecache_subclass_is_a_dogpile_alias_everywhere(capsys):
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from django_dogpile.prometheus import DogpileCollector

    with override_settings(
        CACHES={
            **settings.CACHES,
            "dp_site": {**_dp("locmem", "site"), "BACKEND": "tests.helpers.backends.SiteCache"},
        }
    ):
        assert "dp_site" in dogpile_aliases()
        cache = caches["dp_site"]
        assert cache.alias == "dp_site"
        cache.warm("k", 1)
        call_command("dogpile", "stats", "--alias", "dp_site")
        assert capsys.readouterr().out.startswith("dp_site: 1 process(es)")
        registry = CollectorRegistry()
        registry.register(DogpileCollector())
        assert 'alias="dp_site"' in generate_latest(registry).decode()
        found = [m.id for m in run_checks(include_deployment_checks=True) if m.obj == "dp_site"]
        assert found == ["django_dogpile.W001"]  # locmem: it is checked as one of ours

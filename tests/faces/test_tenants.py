"""A tenant-aware KEY_FUNCTION keeps tenants apart on every face.

django-tenants' documented key function puts the current tenant into every
key; Django's own backends keep tenants apart with it, and so must each
memo DogpileCache keeps in the process: made keys, near-cache entries, the
in-process lock's hand-over, fallbacks, the async in-flight table and the
page memos (each is keyed by the store's own key).  Every test runs with
the key function on the DogpileCache alias, and on the store alias with and
without the near cache, over locmem and over Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.conf import settings
from django.core.cache import caches
from django.template import engines
from django.test import AsyncClient, Client, override_settings

from django_dogpile.decorators import cached
from tests.helpers import tenants

ALIASES = [
    pytest.param(alias, marks=pytest.mark.redis) if "redis" in alias else alias for alias in tenants.ALIASES
]


@pytest.fixture
def sites(request):
    """CACHES with the tenant aliases; every store emptied."""
    with override_settings(CACHES=tenants.caches(settings.REDIS_URL)):
        for alias in ("t_plain", "t_locmem", "t_redis_plain", "t_redis", "t_make_key"):
            if "redis" not in alias or "redis_server" in request.fixturenames:
                for name in ("acme", "globex", "public"):
                    token = tenants.tenant.set(name)
                    try:
                        caches[alias].clear()
                    finally:
                        tenants.tenant.reset(token)
        yield


def as_tenant(name, fn, *args, **kwargs):
    token = tenants.tenant.set(name)
    try:
        return fn(*args, **kwargs)
    finally:
        tenants.tenant.reset(token)


@pytest.mark.parametrize("alias", ALIASES)
def test_get_or_set_twice_is_each_tenants_own_value(sites, alias):
    cache = caches[alias]
    for _ in range(2):  # the second round is served from every memo there is
        assert as_tenant("acme", cache.get_or_set, "report", lambda: "ACME's report") == "ACME's report"
        assert as_tenant("globex", cache.get_or_set, "report", lambda: "Globex's report") == "Globex's report"
    assert as_tenant("globex", cache.get, "report") == "Globex's report"
    assert as_tenant("acme", cache.get, "report") == "ACME's report"
    as_tenant("acme", cache.set, "report", "ACME v2")
    assert as_tenant("globex", cache.get_or_set, "report", lambda: "never") == "Globex's report"
    as_tenant("globex", cache.delete, "report")
    assert as_tenant("acme", cache.get_or_set, "report", lambda: "never") == "ACME v2"
    assert as_tenant("globex", cache.get_or_set, "report", lambda: "Globex v3") == "Globex v3"


@pytest.mark.parametrize("alias", ALIASES)
def test_a_waiting_thread_is_not_handed_another_tenants_value(sites, alias):
    """ACME's thread creates the value slowly; Globex's thread, waiting on the
    same key name meanwhile, must not be handed what ACME's made."""
    cache = caches[alias]
    started = threading.Event()
    got = {}

    def acme():
        def slow():
            started.set()
            time.sleep(0.4)
            return "ACME"

        got["acme"] = as_tenant("acme", cache.get_or_set, "cold", slow)

    def globex():
        started.wait(5)
        time.sleep(0.05)
        got["globex"] = as_tenant("globex", cache.get_or_set, "cold", lambda: "GLOBEX")

    threads = [threading.Thread(target=acme), threading.Thread(target=globex)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == {"acme": "ACME", "globex": "GLOBEX"}


@pytest.mark.parametrize("alias", ALIASES)
def test_async_callers_of_two_tenants_do_not_share_a_regeneration(sites, alias):
    cache = caches[alias]

    async def one(name):
        token = tenants.tenant.set(name)
        try:

            async def create():
                await asyncio.sleep(0.2)
                return name.upper()

            return await cache.aget_or_set("async-cold", create)
        finally:
            tenants.tenant.reset(token)

    async def main():
        return await asyncio.gather(one("acme"), one("globex"))

    assert asyncio.run(main()) == ["ACME", "GLOBEX"]


@pytest.mark.parametrize("alias", ALIASES)
def test_the_fragment_tag_shows_each_tenant_its_own_fragment(sites, alias):
    template = engines["django"].from_string(
        "{% load dogpile %}{% dogpile_cache 300 'sidebar' using=alias %}sidebar of {{ name }}{% enddogpile_cache %}"
    )
    for _ in range(2):
        assert as_tenant("acme", template.render, {"alias": alias, "name": "ACME"}) == "sidebar of ACME"
        assert as_tenant("globex", template.render, {"alias": alias, "name": "Globex"}) == "sidebar of Globex"


@pytest.mark.parametrize("alias", ALIASES)
def test_prefetched_fragments_are_each_tenants_own(sites, alias):
    """``{% dogpile_prefetch %}`` keys its records by the store's own key,
    which the tenant's KEY_FUNCTION makes."""
    template = engines["django"].from_string(
        "{% load dogpile %}{% dogpile_prefetch 'card' i for i in items using=alias %}"
        "{% for i in items %}{% dogpile_cache 300 'card' i using=alias %}{{ name }} {{ i }};"
        "{% enddogpile_cache %}{% endfor %}"
    )
    for _ in range(2):
        acme = as_tenant("acme", template.render, {"alias": alias, "name": "ACME", "items": [1, 2]})
        globex = as_tenant("globex", template.render, {"alias": alias, "name": "Globex", "items": [1, 2]})
        assert (acme, globex) == ("ACME 1;ACME 2;", "Globex 1;Globex 2;")


@pytest.mark.parametrize("alias", ALIASES)
def test_cached_functions_keep_each_tenants_result(sites, alias):
    calls = []

    @cached(300, cache=alias)
    def totals(year):
        calls.append(tenants.tenant.get())
        return f"{tenants.tenant.get()} {year}"

    for _ in range(2):
        assert as_tenant("acme", totals, 2026) == "acme 2026"
        assert as_tenant("globex", totals, 2026) == "globex 2026"
    assert calls == ["acme", "globex"]
    as_tenant("acme", totals.invalidate, 2026)
    assert as_tenant("globex", totals, 2026) == "globex 2026"
    assert calls == ["acme", "globex"]


@pytest.mark.parametrize("alias", ALIASES)
def test_the_page_decorator_serves_each_tenant_its_own_page(sites, alias):
    with override_settings(
        ROOT_URLCONF="tests.helpers.tenants",
        MIDDLEWARE=["tests.helpers.tenants.TenantMiddleware", *settings.FULL_STACK],
    ):
        client = Client()
        for _ in range(2):
            for name in ("acme", "globex"):
                response = client.get(f"/{alias}/", headers={"X-Tenant": name})
                assert response.content.decode() == f"page of {name}"

        async def main():
            aclient = AsyncClient()
            return [
                (await aclient.get(f"/{alias}/", headers={"X-Tenant": name})).content.decode()
                for name in ("globex", "acme", "initech")
            ]

        assert asyncio.run(main()) == ["page of globex", "page of acme", "page of initech"]

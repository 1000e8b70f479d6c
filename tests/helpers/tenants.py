"""A multi-tenant site as django-tenants builds one: the tenant is chosen per
request and a ``KEY_FUNCTION`` puts it into every cache key.

django-tenants documents ``django_tenants.cache.make_key``, which reads the
current schema (``connection.schema_name``); here the tenant lives in a
context variable a middleware sets from the ``X-Tenant`` header, so it
follows a request into ``sync_to_async`` threads and background jobs as a
context variable does.
"""

from __future__ import annotations

import contextvars
from typing import Any

from django.http import HttpResponse
from django.urls import path

from django_dogpile.decorators import dogpile_cache_page

tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="public")

KEY_FUNCTION = "tests.helpers.tenants.make_key"
#: the DogpileCache aliases the faces are tried on (CACHES below)
ALIASES = (
    "dp_t_own",
    "dp_t_store",
    "dp_t_near",
    "dp_t_redis_own",
    "dp_t_redis",
    "dp_t_redis_near",
    "dp_t_make_key",
)


def make_key(key: str, key_prefix: str, version: int) -> str:
    """django-tenants' key function, shape for shape."""
    return f"{tenant.get()}:{key_prefix}:{version}:{key}"


def caches(redis_url: str) -> dict[str, Any]:
    """The stores and DogpileCache aliases: the key function on the
    DogpileCache alias (``*_own``), or on the store (with and without the
    near cache), over locmem and over Redis."""
    near = {"MAX_ENTRIES": 100, "MAX_BYTES": 1 << 20, "MAX_AGE": 30}
    options = {"GRACE": 600, "LOCK_TIMEOUT": 5}

    def dp(location: str, prefix: str, **more: Any) -> dict[str, Any]:
        return {
            "BACKEND": "django_dogpile.cache.DogpileCache",
            "LOCATION": location,
            "TIMEOUT": 300,
            "KEY_PREFIX": prefix,
            "OPTIONS": {**options, **more.pop("OPTIONS", {})},
            **more,
        }

    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t-default"},
        "t_plain": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t-plain"},
        "t_locmem": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "t-tenants",
            "KEY_FUNCTION": KEY_FUNCTION,
        },
        "t_redis_plain": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url},
        "t_redis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_FUNCTION": KEY_FUNCTION,
        },
        "dp_t_own": dp("t_plain", "own", KEY_FUNCTION=KEY_FUNCTION),
        "dp_t_store": dp("t_locmem", "store"),
        "dp_t_near": dp("t_locmem", "near", OPTIONS={"NEAR_CACHE": near}),
        "dp_t_redis_own": dp("t_redis_plain", "rown", KEY_FUNCTION=KEY_FUNCTION),
        "dp_t_redis": dp("t_redis", "rstore"),
        "dp_t_redis_near": dp("t_redis", "rnear", OPTIONS={"NEAR_CACHE": near}),
        # a store class whose own make_key reads the tenant
        "t_make_key": {"BACKEND": "tests.helpers.backends.TenantLocMem", "LOCATION": "t-make-key"},
        "dp_t_make_key": dp("t_make_key", "mk", OPTIONS={"NEAR_CACHE": near}),
    }


class TenantMiddleware:
    """Chooses the request's tenant from ``X-Tenant``."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        token = tenant.set(request.headers.get("X-Tenant", "public"))
        try:
            return self.get_response(request)
        finally:
            tenant.reset(token)


def _page(request: Any) -> HttpResponse:
    return HttpResponse(f"page of {tenant.get()}")


urlpatterns = [path(f"{alias}/", dogpile_cache_page(300, cache=alias)(_page)) for alias in ALIASES]

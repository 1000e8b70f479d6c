"""Async views over the native asyncio path (tests/stores/test_native_async.py)."""

from __future__ import annotations

from django.core.cache import caches
from django.http import HttpResponse
from django.urls import path

from django_dogpile.decorators import dogpile_cache_page

KEYS = 10


def _reads(alias: str):
    async def view(request):
        cache = caches[alias]
        values = [await cache.aget_or_set(f"k{i}", f"made {i}") for i in range(KEYS)]
        return HttpResponse(",".join(values))

    return view


@dogpile_cache_page(60, cache="dp_async")
async def page(request):
    return HttpResponse("the page")


urlpatterns = [
    path("native/", _reads("dp_async")),
    path("threads/", _reads("dp_async_threads")),
    path("page/", page),
]

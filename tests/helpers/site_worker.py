"""A worker process for the per-site cache tests (started with 'spawn'):
it imports nothing of Django before setting it up."""

from __future__ import annotations

import threading
import time

OURS = (
    "django_dogpile.middleware.UpdateCacheMiddleware",
    "django_dogpile.middleware.FetchFromCacheMiddleware",
)
DJANGOS = (
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
)


def middleware(pair: tuple[str, str]) -> list[str]:
    """The full stack with a per-site cache pair where Django documents it:
    the update half first, the fetch half last."""
    from tests.settings import FULL_STACK

    return [pair[0], *FULL_STACK, pair[1]]


def serve(pair_name, alias, seconds, threads, start_at, until, url, results):
    """``threads`` clients GET ``url`` from ``start_at`` to ``until`` through
    the per-site cache ``pair_name`` ("ours" or "django") over ``alias``."""
    from tests.helpers.procs import _setup

    _setup()
    from django.test import Client, override_settings

    statuses: list[int] = []
    with override_settings(
        MIDDLEWARE=middleware(OURS if pair_name == "ours" else DJANGOS),
        ROOT_URLCONF="tests.helpers.site_urls",
        CACHE_MIDDLEWARE_ALIAS=alias,
        CACHE_MIDDLEWARE_SECONDS=seconds,
        CACHE_MIDDLEWARE_KEY_PREFIX="site",
    ):

        def run():
            client = Client()
            time.sleep(max(0.0, start_at - time.time()))
            while time.time() < until:
                statuses.append(client.get(url).status_code)
                time.sleep(0.01)

        workers = [threading.Thread(target=run) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    results.put(statuses)

"""The views of the page-face tests with no decorator: the per-site cache
(``django_dogpile.middleware`` or Django's pair) caches them, as a site
that caches whole sites does (the worker processes: site_worker.py)."""

from __future__ import annotations

import time

from django.http import HttpResponse
from django.urls import path

from tests.helpers import page_urls
from tests.helpers.site_worker import DJANGOS, OURS, middleware  # noqa: F401 - re-exported


def shared(request):
    """A slow page whose runs are counted in Redis (every process sees them)."""
    from tests.helpers.procs import raw_redis

    raw_redis().incr(request.GET.get("counter", "site:runs"))
    time.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse(f"made at {time.time()}")


urlpatterns = [
    path("add-message/", page_urls.add_message),
    path("shared/", shared),
    *[path(f"{name}/", view) for name, view in {**page_urls.VIEWS, **page_urls.EXTRA}.items()],
]


class PartialVaryMiddleware:
    """Marks fragment requests and varies every response on their header
    (as django-htmx's middleware and a site's own Vary do): a Vary added
    after the view returned, which the page's key cannot know at first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.utils.cache import patch_vary_headers

        request.partial = request.headers.get("X-Partial") == "true"
        response = self.get_response(request)
        patch_vary_headers(response, ("X-Partial",))
        return response


def products(request):
    n = page_urls.count("products")
    time.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse(f"partial {n}" if request.partial else f"<html>full {n}</html>")


urlpatterns += [path("products/", products)]

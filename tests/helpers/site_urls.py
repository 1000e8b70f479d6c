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

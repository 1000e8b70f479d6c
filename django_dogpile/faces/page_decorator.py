"""``dogpile_cache_page``: the decorator; the request's flow is
:class:`~django_dogpile.faces.page.Page` (its rules: :mod:`django_dogpile.faces.page`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from django_dogpile.faces.common import check_timeout, declare
from django_dogpile.faces.page import Page
from django_dogpile.faces.page_tags import TagsArgument, tags_of

__all__ = ["dogpile_cache_page"]


def dogpile_cache_page(
    timeout: float | None,
    *,
    cache: str | None = None,
    key_prefix: str | None = None,
    tags: TagsArgument = None,
    cdn: bool | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache a view's page; one request regenerates it when it goes stale.

    :param timeout: seconds the page stays fresh (as ``cache_page``'s);
     ``None`` uses ``DOGPILE["TIMEOUT"]``, then the cache's default.
    :param cache: the cache alias (default: ``DOGPILE["CACHE_ALIAS"]`` or
     ``"default"``), best a :class:`~django_dogpile.cache.DogpileCache`.
    :param key_prefix: distinguishes pages of different decorators on the
     same URL.
    :param tags: the page's tags (``invalidate_tags``): a list, or a
     callable of the request and the view's arguments returning one.  The
     tags of the fragments and ``cached()`` values it shows are added.
    :param cdn: send a CDN's headers (:mod:`~django_dogpile.faces.page_tags`);
     ``None`` uses ``DOGPILE["CDN_HEADERS"]``.

    See the module docstring for what is never stored.
    """

    declare("dogpile_cache_page", cache)
    page_tags = tags_of(tags, "dogpile_cache_page")

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        check_timeout("dogpile_cache_page", timeout, view, finite=True)  # not on every request
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                if request.method not in ("GET", "HEAD"):
                    return await view(request, *args, **kwargs)
                page = Page(
                    request, timeout, cache, key_prefix, tags=page_tags(request, args, kwargs), cdn=cdn
                )
                if not page.usable:
                    return await view(request, *args, **kwargs)
                return await page.aserve(lambda: view(request, *args, **kwargs))

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            page = Page(request, timeout, cache, key_prefix, tags=page_tags(request, args, kwargs), cdn=cdn)
            if not page.usable:
                return view(request, *args, **kwargs)
            return page.serve(lambda: view(request, *args, **kwargs))

        return wrapper

    return decorator

"""The per-site cache, with dogpile protection: a drop-in for Django's
``UpdateCacheMiddleware`` / ``FetchFromCacheMiddleware`` pair.

Put them where Django's go, with the same settings::

    MIDDLEWARE = [
        "django_dogpile.middleware.UpdateCacheMiddleware",  # first
        "django.contrib.sessions.middleware.SessionMiddleware",
        ...,
        "django_dogpile.middleware.FetchFromCacheMiddleware",  # last
    ]
    CACHE_MIDDLEWARE_ALIAS = "default"  # a DogpileCache alias
    CACHE_MIDDLEWARE_SECONDS = 600
    CACHE_MIDDLEWARE_KEY_PREFIX = ""

Django's pair reads and writes with ``get`` and ``set``: over a DogpileCache
alias it runs the view once per concurrent request at every expiry (a check
says so: ``django_dogpile.W006``).  Here ``FetchFromCacheMiddleware`` runs
the rest of the request -- the view and any middleware below it -- as the
creator of the page face (:mod:`django_dogpile.faces.page`): one request
per page and key regenerates it, in any process, while the others get the
stale page; and the page face's rules decide what is never stored (a page
that wrote the session, showed messages, used the CSRF token, set a cookie,
is private, varies on ``*``...).  ``UpdateCacheMiddleware``, first, sees the
response after every other middleware's response phase: the ``Vary`` names
they added (``Cookie``, ``Accept-Language``) are learnt for the URL, as
Django's learns them, so the next request keys on them too.  Until a URL's
names have been learnt from such a final response, its requests run the
view themselves and the update half stores the page (as Django's pair
does): no request is served a page another made before its key is known.

``CacheMiddleware`` is the two in one, as Django's ``CacheMiddleware``.
Unlike Django's pair, a view's own ``Cache-Control: max-age`` does not set
the page's freshness: ``CACHE_MIDDLEWARE_SECONDS`` does (use
``dogpile_cache_page`` for per-view timeouts), and ``private``, ``no-cache``
and ``no-store`` keep a page out of the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from django_dogpile.faces.common import declare
from django_dogpile.faces.page import Page

__all__ = ["CacheMiddleware", "FetchFromCacheMiddleware", "UpdateCacheMiddleware"]

#: what the log and the W003 check call this face
FACE = "the per-site cache"
#: the request attribute the two halves share
_PAGE = "_dogpile_page"
UPDATE = "django_dogpile.middleware.UpdateCacheMiddleware"


class _Middleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]  # as Django documents it


class FetchFromCacheMiddleware(_Middleware):
    """Serve the page from the cache; regenerate it once when stale (last
    in ``MIDDLEWARE``)."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self.alias: str = settings.CACHE_MIDDLEWARE_ALIAS
        self.timeout: Any = settings.CACHE_MIDDLEWARE_SECONDS
        self.key_prefix: str = settings.CACHE_MIDDLEWARE_KEY_PREFIX
        #: the update half is installed: it knows the final Vary (learn_final)
        self.final = UPDATE in settings.MIDDLEWARE and type(self) is not CacheMiddleware
        declare(FACE, self.alias)

    def _page(self, request: HttpRequest) -> Page | None:
        if request.method not in ("GET", "HEAD"):
            return None
        page = Page(request, self.timeout, self.alias, self.key_prefix, face=FACE, final=self.final)
        if not page.usable:
            return None
        setattr(request, _PAGE, page)
        return page

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        page = self._page(request)
        if page is None:
            return self.get_response(request)
        return page.serve(lambda: self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        page = self._page(request)
        if page is None:
            return await self.get_response(request)
        return await page.aserve(lambda: self.get_response(request))


class UpdateCacheMiddleware(_Middleware):
    """Learn the ``Vary`` names the other middleware added (first in
    ``MIDDLEWARE``)."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        self._learn(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        response = await self.get_response(request)
        page = getattr(request, _PAGE, None)
        if page is not None and page.needs_learning(response):
            # store I/O: where Django runs a cache's sync calls
            await sync_to_async(page.learn_final)(response)
        return response

    @staticmethod
    def _learn(request: HttpRequest, response: HttpResponseBase) -> None:
        page = getattr(request, _PAGE, None)
        if page is not None:
            page.learn_final(response)


class CacheMiddleware(FetchFromCacheMiddleware):
    """Both halves in one (as Django's ``CacheMiddleware``): placed last, it
    cannot see the ``Vary`` names that middleware above it adds later."""

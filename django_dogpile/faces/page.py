"""``dogpile_cache_page``: Django's ``cache_page`` that never stampedes, and
never serves one visitor's page to another.

The rules, in the order they are applied:

* Only GET and HEAD requests are looked at; any other method goes straight
  to the view, before any key is made.
* The key is Django's: the absolute URL, the method, the values of the
  request headers the page varies on (an absent header never shares a key
  with an empty one), the active language when ``USE_I18N`` and the
  current time zone when ``USE_TZ``.
* A HEAD request is served the fresh GET page when there is one, and
  otherwise goes through the same single flight under its own key (as
  Django stores HEAD responses).
* A response is stored only if :func:`uncacheable` finds no reason against
  it (:mod:`django_dogpile.faces.visitors`), *when the view returns*: the
  rules cover what the middleware's response phase will do.  The reason is
  logged (DEBUG) and sent: ``X-Dogpile-Cache: MISS; uncacheable=session``.
* A page that used the session varies on ``Cookie`` (as
  ``SessionMiddleware`` will make it), and so does every page made for a
  visitor who has a session cookie (``request.session.session_key`` is
  read without marking the session accessed); a request with ``Authorization``
  and no ``public`` directive varies on ``Authorization``; a stored page
  gets ``Expires`` and ``Cache-Control: max-age`` as ``cache_page`` sets
  them (a 304 too).
* ``Vary`` is learnt per URL: the header names are kept in the process
  and in the store (for ``TIMEOUT + GRACE``), and only ever grow until that
  record expires, so a URL whose responses vary on different headers
  (anonymous and ``Authorization`` requests) settles on one key scheme.  The
  first response is stored under the key its own ``Vary`` gives.
* Hit-for-miss: a page that refused caching *by its own nature*
  (``streaming``, ``private``, ``vary-star``, ``cookie``, ``csrf``) is run
  uncached, side by side, for ``min(120 s, timeout)`` -- requests do not
  queue on its lock.  A refusal for one visitor's state (``session``,
  ``messages``) or a ``status`` only releases the requests queued behind it
  (they run the view themselves); the next request tries again.
* A non-200 while a stale page exists is a failed regeneration: with
  ``SERVE_STALE_ON_ERROR`` the stale page is served, with ``RETRY_AFTER``
  the next attempt waits; protection stays on.
* Every caller gets its own response object.  With ``BACKGROUND`` a page is
  still regenerated in the request that found it stale (never by re-running
  the view on a request object that another thread is using); the other
  requests get the stale page.
* ``Age`` is sent on pages served from the store (``HIT``, ``UPDATING``,
  ``STALE``); Django's ``cache_page`` sends none.  A stale page is visibly
  stale: ``Age`` beyond ``max-age``.
* A hit is one store read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import get_max_age, patch_response_headers, patch_vary_headers

from django_dogpile import records
from django_dogpile.conf import get_config
from django_dogpile.engine import memory
from django_dogpile.engine.tags import Collector, current
from django_dogpile.faces.common import face_cache
from django_dogpile.faces.page_creator import ARegenerate, Bypass, FailedPage, Refused, Regenerate, Relearn
from django_dogpile.faces.page_index import note_variant, url_tag
from django_dogpile.faces.page_keys import page_key, url_key, vary_of
from django_dogpile.faces.page_tags import cdn_headers, page_collecting
from django_dogpile.faces.visitors import PAGE_REFUSES, directives, own_csrf_flag, uncacheable
from django_dogpile.records import MISSING

__all__ = ["Page"]

log = logging.getLogger(__name__)

_PASS_TTL = 120.0  # seconds a page that refused by its nature runs uncached


class Page:
    """One GET or HEAD request through ``dogpile_cache_page``."""

    def __init__(
        self,
        request: HttpRequest,
        timeout: Any,
        alias: str | None,
        prefix: str | None,
        face: str = "dogpile_cache_page",
        final: bool = False,
        tags: tuple[str, ...] = (),
        cdn: bool | None = None,
    ) -> None:
        self.request = request
        self.started = time.monotonic()
        config = get_config()
        self.cache = cache = face_cache(alias, face=face)
        if timeout is None:
            timeout = config["TIMEOUT"]
        if timeout is None:
            timeout = cache.default_timeout
        self.timeout = timeout
        # None: the cache's own forever, as with cache_page; 0 or less: off
        self.usable = timeout is None or timeout > 0
        self.status_header = config["STATUS_HEADER"]
        self.method = request.method or "GET"
        options = getattr(cache, "options", None)
        self.grace = getattr(options, "grace", 0) or 0
        self.memos = memory.pages(getattr(cache, "location", None) or f"alias:{alias}")
        self.prefix = prefix
        self.url_key = url_key(request, prefix)
        # The memos are keyed as the store keys the page (a KEY_FUNCTION may
        # put this request's tenant in it): one tenant's learnt Vary or
        # refusal is never another's.
        store_key = getattr(cache, "store_key", None)
        self.memo_key: Callable[[str], str] = store_key if store_key is not None else cache.make_key
        self.url_memo = self.memo_key(self.url_key)
        self.vary: tuple[str, ...] = ()
        #: the per-site cache with its update half: the Vary names other
        #: middleware adds are known only from a final response (learn_final)
        self.final = final
        #: this URL's Vary names were learnt from a final response
        self.settled = False
        #: this request ran its own view (the page stored is this request's)
        self.ran = False
        #: the page's own tags; the stamp collected while its view ran
        self.tags = tags
        self.collected: Collector | None = None
        self.cdn = config["CDN_HEADERS"] if cdn is None else cdn

    # --- keys ---------------------------------------------------------------

    def key(self, method: str) -> str:
        """The page key, as Django's ``cache_page`` makes it."""
        return page_key(self.request, self.url_key, self.vary, method)

    def _learn_from_store(self) -> tuple[str, ...]:
        vary = tuple(self.cache.get(self.url_key + ".vary") or ())
        self.memos.learnt(self.url_memo, vary)
        return vary

    def _learnt(self, raw: tuple[str, ...]) -> None:
        """Take the learnt names; a trailing "" marks them learnt from a final response."""
        self.vary = tuple(name for name in raw if name)
        self.settled = len(self.vary) != len(raw)

    def _remember(self, vary: tuple[str, ...], settled: bool | None = None) -> None:
        settled = self.settled if settled is None else settled
        raw = vary + (("",) if settled else ())
        self.memos.learnt(self.url_memo, raw)
        timeout = None if self.timeout is None else self.timeout + self.grace
        self.cache.set(self.url_key + ".vary", list(raw), timeout)
        self.vary, self.settled = vary, settled

    # --- the response -----------------------------------------------------

    def finish(self, key: str, response: HttpResponseBase) -> tuple[HttpResponseBase, float]:
        """Turn the view's response into what is stored, or refuse it."""
        self.ran = True
        self.collected = current()
        if hasattr(response, "render") and callable(response.render):
            response = response.render()
        reason = uncacheable(self.request, response)
        if reason == "status":
            if response.status_code == 304:
                patch_response_headers(response, self.timeout)  # as cache_page
            raise FailedPage(response)
        if reason is not None:
            raise Refused(response, reason)
        session = getattr(self.request, "session", None)
        if session is not None and (
            getattr(session, "accessed", False) or settings.SESSION_COOKIE_NAME in self.request.COOKIES
        ):
            # as SessionMiddleware will; and for any visitor with a session,
            # whose key a view may read without marking the session accessed
            patch_vary_headers(response, ("Cookie",))
        lifetime = self.lifetime()  # max-age as cache_page's: the view's word first
        patch_response_headers(response, self.timeout if lifetime is None else max(0, lifetime))
        if self.cdn:
            cdn_headers(response, self.collected.tags if self.collected else list(self.tags), self.grace)
        if self.request.headers.get("Authorization") and "public" not in directives(response):
            patch_vary_headers(response, ("Authorization",))
        vary = vary_of(response)
        if not set(vary) <= set(self.vary):
            # The key was made with fewer Vary names: learn them, and store
            # this page under the key they give.
            self._remember(tuple(sorted(set(vary) | set(self.vary))))
            if not self.final or self.settled:  # else the update half stores it
                self.noted(self.key(self.method))
                self._set(self.key(self.method), (response, records.wall_clock()))
            raise Refused(response, None)
        if not self.final or self.settled:
            self.noted(key)
        return response, records.wall_clock()

    def lifetime(self) -> Any:
        """The page's timeout: its view's word (:func:`~django_dogpile.results.expires_in`,
        :func:`~django_dogpile.results.dont_store`: 0), else the decorator's."""
        made = self.collected
        if made is None or (made.store and made.timeout is MISSING):
            return self.timeout
        return 0 if not made.store else made.timeout

    def _set(self, key: str, stored: Any) -> None:
        """Store a page made outside ``get_or_set``, unless its view said not to."""
        timeout = self.lifetime()
        if timeout is None or timeout > 0:
            self.cache.set(key, stored, timeout, **self.tagged())

    def tagged(self) -> dict[str, Any]:
        """``set()``'s ``tags`` for this page: the stamp collected as it was made."""
        return {"tags": self.collected} if self.collected is not None and self.collected.pairs else {}

    def noted(self, key: str) -> None:
        """Note ``key`` among the stored variants of this page's URL (before
        it is stored: a URL with many variants tags each with its own tag)."""
        keep = None if self.timeout is None else self.timeout + self.grace
        url = self.request.get_full_path()
        binding = getattr(self.cache, "binding", None)
        if note_variant(self.cache, url, self.prefix, key, keep) and binding and self.collected:
            self.collected.add(binding.tags.stamp((url_tag(url, self.prefix),)))

    def needs_learning(self, response: HttpResponseBase) -> bool:
        """True if :meth:`learn_final` has work (store I/O) to do."""
        return not self.settled or not set(vary_of(response)) <= set(self.vary)

    def learn_final(self, response: HttpResponseBase) -> None:
        """The response as the outermost middleware sees it (the per-site
        cache's update half): learn the ``Vary`` names added after the view
        returned, and store this request's own page under the key they give,
        as Django's UpdateCacheMiddleware does.  A page this request got
        from another is never stored under this request's key."""
        if not self.needs_learning(response):
            return
        self._remember(tuple(sorted(set(vary_of(response)) | set(self.vary))), settled=True)
        if self.ran and uncacheable(self.request, response) is None:
            key = self.key(self.method)
            self.noted(key)
            self._set(key, (response, records.wall_clock()))

    def _refused(self, key: str, response: HttpResponseBase, reason: str | None) -> HttpResponseBase:
        if reason is None:
            return self._mark(response, "MISS")
        log.debug("page %s not stored: %s", self.request.path, reason)
        self.memos.refuse(self.memo_key(key))
        if reason in PAGE_REFUSES:
            self.memos.passes.hold(
                self.memo_key(key), _PASS_TTL if self.timeout is None else min(_PASS_TTL, self.timeout)
            )
        return self._mark(response, f"MISS; uncacheable={reason}")

    def _store(self, key: str, stored: tuple[HttpResponseBase, float]) -> HttpResponseBase:
        self._set(key, stored)  # cacheable again
        self.memos.passes.forget(self.memo_key(key))
        return self._deliver(stored, "MISS")

    def _deliver(self, stored: tuple[HttpResponseBase, float], status: str | None) -> HttpResponseBase:
        response, created = stored
        if status in ("HIT", "UPDATING", "STALE") and get_max_age(response) is not None:
            response["Age"] = str(max(0, int(records.wall_clock() - created)))
        return self._mark(response, status)

    def _mark(self, response: HttpResponseBase, status: str | None) -> HttpResponseBase:
        if self.status_header and status:
            response[self.status_header] = status
        return response

    # --- sync ---------------------------------------------------------------

    def serve(self, run: Callable[[], Any]) -> HttpResponseBase:
        vary = self.memos.vary.get(self.url_memo)
        self._learnt(self._learn_from_store() if vary is None else vary)
        if self.final and not self.settled:
            return self._bypass(self.key(self.method), run, store=False)
        if self.method == "HEAD":
            stored = self.cache.get(self.key("GET"))
            if stored is not None:
                return self._deliver(stored, "HIT")
        getter = getattr(self.cache, "get_or_set_status", None)
        for _ in range(3):
            key = self.key(self.method)
            if self.memos.passes.holding(self.memo_key(key)):
                return self._bypass(key, run)
            try:
                if getter is not None:
                    stored, status = getter(key, Regenerate(self, key, run), self.timeout, tags=self.tags)
                else:
                    stored, status = (
                        self.cache.get_or_set(key, Regenerate(self, key, run), self.timeout),
                        None,
                    )
            except Relearn:
                self._learnt(
                    self.memos.vary.get(self.url_memo) or self.vary + (("",) if self.settled else ())
                )
                continue
            except Bypass:
                return self._bypass(key, run)
            except Refused as refused:
                return self._refused(key, refused.response, refused.reason)
            except FailedPage as failed:
                return self._refused(key, failed.response, "status")
            return self._deliver(stored, status)
        return self._bypass(self.key(self.method), run)

    def _bypass(self, key: str, run: Callable[[], Any], store: bool = True) -> HttpResponseBase:
        """Run the view in this request, unlocked; ``store=False``: a URL
        whose final Vary is not known yet (the update half stores it)."""
        try:
            with own_csrf_flag(self.request), page_collecting(self.cache, self.tags):
                stored = self.finish(key, run())
            return self._store(key, stored) if store else self._deliver(stored, "MISS")
        except Refused as refused:
            return self._refused(key, refused.response, refused.reason)
        except FailedPage as failed:
            return self._refused(key, failed.response, "status")

    # --- async --------------------------------------------------------------

    async def aserve(self, run: Callable[[], Awaitable[Any]]) -> HttpResponseBase:
        vary = self.memos.vary.get(self.url_memo)
        if vary is None:
            vary = await self.cache.aget(self.url_key + ".vary")
            vary = tuple(vary or ())
            self.memos.learnt(self.url_memo, vary)
        self._learnt(vary)
        if self.final and not self.settled:
            return await self._abypass(self.key(self.method), run, store=False)
        if self.method == "HEAD":
            stored = await self.cache.aget(self.key("GET"))
            if stored is not None:
                return self._deliver(stored, "HIT")
        getter = getattr(self.cache, "aget_or_set_status", None)
        for _ in range(3):
            key = self.key(self.method)
            if self.memos.passes.holding(self.memo_key(key)):
                return await self._abypass(key, run)
            try:
                creator = ARegenerate(self, key, run)
                if getter is not None:
                    stored, status = await getter(key, creator, self.timeout, tags=self.tags)
                else:
                    stored, status = await self.cache.aget_or_set(key, creator, self.timeout), None
            except Relearn:
                self._learnt(
                    self.memos.vary.get(self.url_memo) or self.vary + (("",) if self.settled else ())
                )
                continue
            except Bypass:
                return await self._abypass(key, run)
            except Refused as refused:
                return self._refused(key, refused.response, refused.reason)
            except FailedPage as failed:
                return self._refused(key, failed.response, "status")
            return self._deliver(stored, status)
        return await self._abypass(self.key(self.method), run)

    async def _abypass(
        self, key: str, run: Callable[[], Awaitable[Any]], store: bool = True
    ) -> HttpResponseBase:
        try:
            with own_csrf_flag(self.request), page_collecting(self.cache, self.tags):
                stored = await sync_to_async(self.finish)(key, await run())
        except Refused as refused:
            return self._refused(key, refused.response, refused.reason)
        except FailedPage as failed:
            return self._refused(key, failed.response, "status")
        if store:
            timeout = self.lifetime()
            if timeout is None or timeout > 0:
                await self.cache.aset(key, stored, timeout, **self.tagged())
            self.memos.passes.forget(self.memo_key(key))
        return self._deliver(stored, "MISS")

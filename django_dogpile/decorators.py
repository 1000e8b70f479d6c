"""``dogpile_cache_page`` and ``cached``: the view and function faces.

``dogpile_cache_page(timeout)`` is Django's ``cache_page`` with the dogpile
cure, and keeps Django's rules for what may be cached:

* only GET requests are stored (a HEAD request is served a cached GET page
  when there is one, and otherwise runs the view uncached);
* only status 200, never a streaming response;
* never a response whose ``Cache-Control`` says ``private``, ``no-cache``
  or ``no-store``, nor one that varies on ``*``;
* never a response that sets a cookie (including the CSRF cookie that
  middleware will set), so one visitor's session can never be served to
  another; a view that read the session varies on Cookie, as
  ``SessionMiddleware`` would make it;
* the key honours the response's ``Vary`` headers: a page that varies on
  Cookie or Accept-Language is stored once per value; ``Vary:
  Authorization`` is added where Django adds it (a request with
  Authorization and no ``public`` directive);
* a stored page carries ``Expires`` and ``Cache-Control: max-age`` as
  ``cache_page`` sets them; when served it gets a true ``Age``, so a stale
  page (served while another request regenerates) is visibly stale
  (``Age`` beyond ``max-age``, ``Expires`` in the past);
* ``DOGPILE["STATUS_HEADER"]`` (default ``X-Dogpile-Cache``) says ``HIT``,
  ``UPDATING``, ``STALE``, ``EXPIRED`` or ``MISS``;
* a hit is one store read: the Vary header names learnt for a URL are kept
  in the process (and in the store for other processes).

``cached(timeout)`` memoises any function through the same ``get_or_set``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
import re
import threading
from typing import Any, Callable

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import (
    get_max_age,
    has_vary_header,
    patch_response_headers,
    patch_vary_headers,
)

from . import entries
from .conf import get_config
from .faces import face_cache, safe_key
from .locks import Deadlines

__all__ = ["cached", "dogpile_cache_page"]

_NOT_CACHEABLE = ("private", "no-cache", "no-store")
_COMMA = re.compile(r"\s*,\s*")  # Django 6.1 dropped django.utils.cache.cc_delim_re


class _DoNotStore(BaseException):
    """Raised by a page creator to hand back a response that must not be
    stored.  A BaseException, so that no ``except Exception`` on the way
    (``SERVE_STALE_ON_ERROR``) mistakes it for a failure."""

    def __init__(self, response: HttpResponseBase, uncacheable: bool = False) -> None:
        self.response = response
        #: True when the page itself said no (private, a cookie...), as
        #: opposed to a HEAD request or a Vary header being learnt.
        self.uncacheable = uncacheable


#: Page keys whose last response could not be cached ("hit-for-miss"):
#: without it, concurrent requests for such a page queue on the key's lock
#: one behind the other (each then runs the view itself, since nothing is
#: stored).  For a while after a refusal, requests for that key run the
#: view directly, side by side -- Varnish's hit-for-miss, per process.
_pass_memo = Deadlines(size=10000)
_PASS_TTL = 120.0  # at most; never longer than the page's own timeout


# URL key -> the Vary header names learnt from its response.
_vary_memo: dict[str, tuple[str, ...]] = {}
_vary_lock = threading.Lock()


def _vary_of(response: HttpResponseBase) -> tuple[str, ...]:
    if not response.has_header("Vary"):
        return ()
    return tuple(sorted({h.strip().lower() for h in _COMMA.split(response["Vary"]) if h.strip()}))


def _url_key(request: HttpRequest, prefix: str) -> str:
    url = hashlib.md5(request.build_absolute_uri().encode(), usedforsecurity=False)
    return safe_key("dogpile.page", prefix, url.hexdigest())


def _page_key(url_key: str, request: HttpRequest, vary: tuple[str, ...]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for header in vary:
        h.update(header.encode() + b"=" + (request.headers.get(header) or "").encode() + b"\0")
    return f"{url_key}.GET.{h.hexdigest()}"


def _why_not_cacheable(request: HttpRequest, response: HttpResponseBase) -> str | None:
    if response.streaming:
        return "streaming"
    if response.status_code != 200:
        return "status"
    if response.cookies:
        return "sets a cookie"
    cache_control = response.get("Cache-Control", "").lower()
    if any(d in cache_control for d in _NOT_CACHEABLE):
        return "Cache-Control"
    if has_vary_header(response, "*"):
        return "Vary: *"
    return None


def dogpile_cache_page(
    timeout: float | None, *, cache: str | None = None, key_prefix: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache a view's page; one request regenerates it when it goes stale.

    :param timeout: seconds the page stays fresh (as ``cache_page``'s);
     ``None`` uses ``DOGPILE["TIMEOUT"]``, then the cache's default.
    :param cache: the cache alias (default: ``DOGPILE["CACHE_ALIAS"]`` or
     ``"default"``), best a :class:`~django_dogpile.cache.DogpileCache`.
    :param key_prefix: distinguishes pages of different decorators on the
     same URL.
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                page = _Page(request, timeout, cache, key_prefix)
                if not page.usable:
                    return await view(request, *args, **kwargs)
                await page.alearn()

                async def create() -> Any:
                    return page.finish(await view(request, *args, **kwargs))

                return await page.aserve(create)

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            page = _Page(request, timeout, cache, key_prefix)
            if not page.usable:
                return view(request, *args, **kwargs)
            page.learn()
            return page.serve(lambda: page.finish(view(request, *args, **kwargs)))

        return wrapper

    return decorator


class _Page:
    """One request through ``dogpile_cache_page``."""

    def __init__(self, request: HttpRequest, timeout: Any, alias: str | None, prefix: str | None) -> None:
        self.request = request
        config = get_config()
        self.cache = face_cache(alias)
        if timeout is None:
            timeout = config["TIMEOUT"]
        if timeout is None:
            timeout = self.cache.default_timeout
        self.timeout = timeout
        self.status_header = config["STATUS_HEADER"]
        # None: the cache's own forever, as with cache_page; 0 or less: off
        self.usable = request.method in ("GET", "HEAD") and (timeout is None or timeout > 0)
        self.url_key = _url_key(request, prefix or "")
        self.headers_key = self.url_key + ".vary"
        self.vary: tuple[str, ...] = ()

    # the Vary header names of this URL: the process memo, else the store
    def learn(self) -> None:
        vary = _vary_memo.get(self.url_key)
        if vary is None:
            vary = tuple(self.cache.get(self.headers_key) or ())
            with _vary_lock:
                if len(_vary_memo) > 10000:
                    _vary_memo.clear()
                _vary_memo[self.url_key] = vary
        self.vary = vary

    async def alearn(self) -> None:
        vary = _vary_memo.get(self.url_key)
        if vary is None:
            await sync_to_async(self.learn, thread_sensitive=False)()
        else:
            self.vary = vary

    def finish(self, response: HttpResponseBase) -> tuple[HttpResponseBase, float]:
        """Turn the view's response into what is stored, or refuse it."""
        if self.request.method != "GET":
            raise _DoNotStore(response)
        if hasattr(response, "render") and callable(response.render):
            response = response.render()
        if _why_not_cacheable(self.request, response):
            raise _DoNotStore(response, uncacheable=True)
        # Middleware below the view in the response phase has not run yet:
        # do now what it will do, so that the key and the stored page agree.
        session = getattr(self.request, "session", None)
        if session is not None and getattr(session, "accessed", False):
            patch_vary_headers(response, ("Cookie",))  # as SessionMiddleware
        if self.request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
            raise _DoNotStore(response, uncacheable=True)  # CsrfViewMiddleware sets a cookie
        patch_response_headers(response, self.timeout)
        cache_control = response.get("Cache-Control", "").lower()
        if self.request.headers.get("Authorization") and "public" not in cache_control:
            patch_vary_headers(response, ("Authorization",))
        vary = _vary_of(response)
        if vary != self.vary:
            # The key was made with other Vary headers: remember the right
            # ones and do not store this page under the wrong key.
            self.cache.set(self.headers_key, list(vary), None)
            with _vary_lock:
                _vary_memo[self.url_key] = vary
            raise _DoNotStore(response)
        return response, entries.now()

    def _key(self) -> str:
        return _page_key(self.url_key, self.request, self.vary)

    def serve(self, create: Callable[[], Any]) -> HttpResponseBase:
        key = self._key()
        if self.request.method == "HEAD":
            stored = self.cache.get(key)
            if stored is None:
                return create_uncached(create)
            return self._deliver(stored, "HIT")
        if _pass_memo.holding(key):
            try:
                stored = create()
            except _DoNotStore as refused:
                return self._refused(key, refused)
            self.cache.set(key, stored, self.timeout)  # cacheable again
            _pass_memo.forget(key)
            return self._deliver(stored, "MISS")
        getter = getattr(self.cache, "get_or_set_status", None)
        try:
            if getter is not None:
                stored, status = getter(key, create, self.timeout)
            else:
                stored, status = self.cache.get_or_set(key, create, self.timeout), None
        except _DoNotStore as refused:
            return self._refused(key, refused)
        return self._deliver(stored, status)

    def _refused(self, key: str, refused: _DoNotStore) -> HttpResponseBase:
        if refused.uncacheable:
            timeout = self.timeout
            _pass_memo.hold(key, _PASS_TTL if timeout is None else min(_PASS_TTL, max(timeout, 0)))
        return self._mark(refused.response, "MISS")

    async def aserve(self, create: Callable[[], Any]) -> HttpResponseBase:
        key = self._key()
        if self.request.method == "HEAD":
            stored = await self.cache.aget(key)
            if stored is None:
                try:
                    await create()
                except _DoNotStore as refused:
                    return self._mark(refused.response, "MISS")
                raise AssertionError("unreachable: HEAD pages are never stored")
            return self._deliver(stored, "HIT")
        if _pass_memo.holding(key):
            try:
                stored = await create()
            except _DoNotStore as refused:
                return self._refused(key, refused)
            await self.cache.aset(key, stored, self.timeout)  # cacheable again
            _pass_memo.forget(key)
            return self._deliver(stored, "MISS")
        getter = getattr(self.cache, "aget_or_set_status", None)
        try:
            if getter is not None:
                stored, status = await getter(key, create, self.timeout)
            else:
                stored, status = await self.cache.aget_or_set(key, create, self.timeout), None
        except _DoNotStore as refused:
            return self._refused(key, refused)
        return self._deliver(stored, status)

    def _deliver(self, stored: tuple[HttpResponseBase, float], status: str | None) -> HttpResponseBase:
        # Every Django store hands out a freshly unpickled object, so setting
        # headers on it touches nobody else's copy.
        response, created = stored
        if get_max_age(response) is not None:
            response["Age"] = str(max(0, int(entries.now() - created)))
        return self._mark(response, status)

    def _mark(self, response: HttpResponseBase, status: str | None) -> HttpResponseBase:
        if self.status_header and status:
            response[self.status_header] = status
        return response


def create_uncached(create: Callable[[], Any]) -> HttpResponseBase:
    try:
        create()
    except _DoNotStore as refused:
        return refused.response
    raise AssertionError("unreachable: HEAD pages are never stored")


def cached(
    timeout: float | None = None,
    *,
    cache: str | None = None,
    key: Callable[..., str] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """Memoise a function in a cache; one caller recomputes a stale value.

    :param timeout: seconds a result stays fresh; ``None`` uses
     ``DOGPILE["TIMEOUT"]``, then the cache's default.
    :param cache: the cache alias.
    :param key: optional ``key(*args, **kwargs) -> str`` naming a result;
     by default the function's qualified name and a hash of its pickled
     arguments (arguments that cannot be pickled are a ``TypeError``
     asking for ``key=``).

    The decorated function gains ``.invalidate(*args, **kw)`` (soft: the
    next call regenerates while others get the old value), ``.refresh(*args,
    **kw)`` (recompute and store now) and ``.key_for(*args, **kw)``.
    """

    def decorator(fn: Callable[..., Any]) -> Any:
        name = f"{fn.__module__}.{fn.__qualname__}"

        def key_for(*args: Any, **kwargs: Any) -> str:
            if key is not None:
                return safe_key("dogpile.fn", name, str(key(*args, **kwargs)))
            try:
                blob = pickle.dumps((args, sorted(kwargs.items())), protocol=4)
            except Exception as exc:
                raise TypeError(
                    f"cached({name}): the arguments cannot be pickled into a key "
                    f"({exc}); pass key=lambda *args, **kw: ... to name results"
                ) from exc
            return safe_key("dogpile.fn", name, hashlib.sha256(blob).hexdigest())

        def resolve() -> tuple[Any, dict[str, Any]]:
            c = face_cache(cache)
            t = timeout if timeout is not None else get_config()["TIMEOUT"]
            return c, ({} if t is None else {"timeout": t})

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()
                return await c.aget_or_set(key_for(*args, **kwargs), lambda: fn(*args, **kwargs), **kw)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()
                return c.get_or_set(key_for(*args, **kwargs), lambda: fn(*args, **kwargs), **kw)

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            c, _ = resolve()
            k = key_for(*args, **kwargs)
            soft = getattr(c, "invalidate", None)
            return bool(soft(k) if soft is not None else c.delete(k))

        def refresh(*args: Any, **kwargs: Any) -> Any:
            c, kw = resolve()
            value = fn(*args, **kwargs)
            c.set(key_for(*args, **kwargs), value, **kw)
            return value

        wrapper.invalidate = invalidate
        wrapper.refresh = refresh
        wrapper.key_for = key_for
        return wrapper

    return decorator

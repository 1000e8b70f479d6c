"""Whether what was just made for a request may be stored for others: the
one place the page decorator and the template tag decide, with the words
of :data:`REASONS`.

The page face asks :func:`uncacheable` when the view returns; the tag asks
:func:`per_visitor` when its block has rendered.  Both lower the CSRF flag
the middleware raised before them (:func:`own_csrf_flag`): it says nothing
about the page.

========== ============================================================
word       the response is not stored when
========== ============================================================
streaming  it is a streaming response
status     its status is not 200 (a 304 included)
private    ``Cache-Control`` has ``private``, ``no-cache`` or
           ``no-store`` (parsed as directives, not substrings)
vary-star  it varies on ``*``
cookie     it sets a cookie
csrf       the view used the CSRF token (``{% csrf_token %}``,
           ``get_token``): the page holds a per-visitor token and
           ``CsrfViewMiddleware`` will set the cookie.  A cookie the
           middleware renews on its own (a visitor's missing or
           malformed one) does not count
session    the session was modified, or is saved on every request
           (``SESSION_SAVE_EVERY_REQUEST``) and was used: the page was
           made from this visitor's session and ``SessionMiddleware``
           will send its cookie
messages   some ``django.contrib.messages`` were read (shown, counted):
           the page shows this visitor's messages
========== ============================================================
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import has_vary_header

__all__ = ["PAGE_REFUSES", "REASONS", "directives", "own_csrf_flag", "per_visitor", "uncacheable"]

#: Every reason a page is not stored, as :func:`uncacheable` words it.
REASONS = ("streaming", "status", "private", "vary-star", "cookie", "csrf", "session", "messages")
#: Reasons that are the page's own nature (hit-for-miss for a while).
PAGE_REFUSES = frozenset({"streaming", "private", "vary-star", "cookie", "csrf"})
_COMMA = re.compile(r"\s*,\s*")  # Django 6.1 dropped django.utils.cache.cc_delim_re


def directives(response: HttpResponseBase) -> set[str]:
    value = response.get("Cache-Control", "")
    return {part.split("=", 1)[0].strip().lower() for part in _COMMA.split(value) if part.strip()}


def _session_written(request: HttpRequest) -> bool:
    """True if ``SessionMiddleware`` will save the session and send its cookie."""
    session = getattr(request, "session", None)
    try:
        accessed, modified = session.accessed, session.modified  # type: ignore[union-attr]
        empty = session.is_empty()  # type: ignore[union-attr]
    except AttributeError:
        return False
    if empty:
        return False
    return bool(modified or (accessed and settings.SESSION_SAVE_EVERY_REQUEST))


def _messages_used(request: HttpRequest) -> bool:
    """True if the page may show this visitor's messages: some were loaded
    (read, counted or iterated; iterating also loads the ones added in this
    request).  Messages only added are not in the page: the storage writes
    them to this visitor's own response, and they show on a later page."""
    storage = getattr(request, "_messages", None)
    return bool(getattr(storage, "_loaded_data", None))


_CSRF_FLAG = "CSRF_COOKIE_NEEDS_UPDATE"


@contextlib.contextmanager
def own_csrf_flag(request: HttpRequest) -> Iterator[None]:
    """Let the CSRF check see only what the code run inside it did.

    ``CsrfViewMiddleware`` raises the flag before the view when a visitor's
    cookie is missing or malformed; that says nothing about the page, and a
    client could otherwise switch caching off at will.  The flag is lowered
    for the block and raised again after it.
    """
    meta = request.META
    preset = meta.pop(_CSRF_FLAG, None)
    try:
        yield
    finally:
        if preset:
            meta[_CSRF_FLAG] = preset


def per_visitor(request: HttpRequest) -> str | None:
    """Return ``"csrf"``, ``"session"`` or ``"messages"`` if the work just done
    for ``request`` depends on (or writes) this visitor's state, else None."""
    if request.META.get(_CSRF_FLAG):
        return "csrf"
    if _session_written(request):
        return "session"
    if _messages_used(request):
        return "messages"
    return None


def uncacheable(request: HttpRequest, response: HttpResponseBase) -> str | None:
    """Return why ``response`` must not be stored for others, or ``None``.

    The one place the page face decides; the words are :data:`REASONS`.
    Called when the view returns, so it also answers for what the
    middleware's response phase will do with this request.
    """
    if response.streaming:
        return "streaming"
    if response.status_code != 200:
        return "status"
    if directives(response) & {"private", "no-cache", "no-store"}:
        return "private"
    if has_vary_header(response, "*"):
        return "vary-star"
    if response.cookies:
        return "cookie"
    return per_visitor(request)

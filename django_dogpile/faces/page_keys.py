"""The keys of ``dogpile_cache_page``: Django's ``cache_page`` keys, made
from the URL, the method, the learnt ``Vary`` headers, the language and the
time zone."""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.timezone import get_current_timezone_name
from django.utils.translation import get_language

from django_dogpile.faces.common import safe_key

__all__ = ["page_key", "url_key", "vary_of"]

_COMMA = re.compile(r"\s*,\s*")  # Django 6.1 dropped django.utils.cache.cc_delim_re


def url_key(request: HttpRequest, prefix: str | None) -> str:
    """The key the page's URL makes (its learnt ``Vary`` names hang on it)."""
    url = hashlib.md5(request.build_absolute_uri().encode(), usedforsecurity=False)
    return safe_key("dogpile.page", prefix or "", url.hexdigest())


def page_key(request: HttpRequest, url: str, vary: tuple[str, ...], method: str) -> str:
    """The page key, as Django's ``cache_page`` makes it (``url``: :func:`url_key`)."""
    h = hashlib.md5(usedforsecurity=False)
    meta = request.META
    for header in vary:
        value = meta.get(_meta_name(header))
        if value is None:
            h.update(b"-,")  # absent never shares a key with empty
        else:
            data = value.encode()
            h.update(b"%d:%s," % (len(data), data))
    parts = [url, method, h.hexdigest()]
    if settings.USE_I18N:
        parts.append(getattr(request, "LANGUAGE_CODE", None) or get_language() or "")
    if settings.USE_TZ:
        parts.append(get_current_timezone_name())
    return safe_key(*parts)


def _meta_name(header: str) -> str:
    name = header.upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name


def vary_of(response: HttpResponseBase) -> tuple[str, ...]:
    if not response.has_header("Vary"):
        return ()
    return tuple(sorted({h.lower() for h in _COMMA.split(response["Vary"].strip()) if h}))

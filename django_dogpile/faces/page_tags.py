"""A page's tags: given by its decorator, bubbled up from what it shows,
and told to a CDN (opt-in: ``DOGPILE["CDN_HEADERS"]`` or ``cdn=True``).

With the CDN headers a stored page carries:

* ``Cache-Control: stale-while-revalidate=<GRACE>, stale-if-error=<GRACE>``:
  a CDN may serve the page stale for as long as the alias does;
* ``Surrogate-Key: <tag> <tag>`` (Fastly, Varnish) and ``Cache-Tag:
  <tag>,<tag>`` (Cloudflare, Akamai): the page's tags, its own and those of
  the fragments and ``cached()`` values it shows, so the CDN can purge by
  tag.  Connect a receiver to :data:`~django_dogpile.signals.tags_invalidated`
  to soft-purge those tags at the CDN when ``invalidate_tags`` runs.
  Only tags a header can carry whole are listed (visible ASCII, no comma or
  space: :func:`cdn_safe`), at most :data:`CDN_HEADER_MAX` characters (the
  CDNs' own limit is about 16 KB); a tag left out is still invalidated here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control

from django_dogpile.engine.tags import Collector, collecting, tag_names

__all__ = ["CDN_HEADER_MAX", "cdn_headers", "cdn_safe", "page_collecting", "tags_of"]

#: the longest tag header a page gets
CDN_HEADER_MAX = 8000
_SAFE = re.compile(r"[!-+\--~]+")  # visible ASCII but the comma

TagsArgument = Callable[..., Any] | list[str] | tuple[str, ...] | str | None


def tags_of(tags: TagsArgument, where: str) -> Callable[[HttpRequest, tuple[Any, ...], dict[str, Any]], Any]:
    """How a decorator's ``tags`` become a request's: a list (checked now),
    or a callable of the request and the view's arguments (each request)."""
    if callable(tags):
        fn = tags

        def call(request: HttpRequest, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return tag_names(fn(request, *args, **kwargs), where)

        return call
    names = tag_names(tags, where)
    return lambda request, args, kwargs: names


@contextlib.contextmanager
def page_collecting(cache: Any, tags: tuple[str, ...]) -> Iterator[Collector | None]:
    """Collect a page's stamp while its view runs outside ``get_or_set``
    (the page is then ``set`` with it); nothing on a cache without tags."""
    binding = getattr(cache, "binding", None)
    if binding is None:
        yield None
        return
    with collecting(binding.tags.stamp(tags) if tags else ()) as collector:
        yield collector


def cdn_headers(response: HttpResponseBase, tags: list[str], grace: float) -> None:
    """Add the CDN headers (see the module docstring) to a page being stored."""
    if grace:
        seconds = int(grace)
        patch_cache_control(response, stale_while_revalidate=seconds, stale_if_error=seconds)
    listed: list[str] = []
    size = 0
    for tag in tags:
        if cdn_safe(tag) and size + len(tag) < CDN_HEADER_MAX:
            listed.append(tag)
            size += len(tag) + 1
    if listed:
        response["Surrogate-Key"] = " ".join(listed)
        response["Cache-Tag"] = ",".join(listed)


def cdn_safe(tag: str) -> bool:
    """True if ``tag`` can be listed in a CDN's tag header as it is."""
    return _SAFE.fullmatch(tag) is not None

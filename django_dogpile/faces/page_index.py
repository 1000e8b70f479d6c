"""The stored variants of each page, found by its URL.

A page is stored under one key per variant (host, method, the values of
the headers it varies on, language, time zone), none of which can be
rebuilt from the URL alone.  So each page face notes, beside the pages, the
keys it stored for a path (``/report/?q=1``: path and query, every host):
:func:`page_keys` lists them, :func:`invalidate_page` makes them all stale
(or gone), and ``manage.py dogpile inspect|invalidate`` accept a URL.

The note is written when a variant is stored -- a regeneration, not a hit --
under the key's lock when the cache is a DogpileCache (so two processes
storing two variants at once both land), and kept as long as the page
(freshness plus ``GRACE``, renewed by the regenerations that find it past
half of that); it holds the :data:`INDEX_SIZE` most recent variants.  A URL
with more (one per visitor: a page that varies on ``Cookie``) is marked in
the note, which keeps the variants stored before the mark for good; each
variant stored after it carries the URL's own tag (:func:`url_tag`), which
:func:`invalidate_page` invalidates too.  So every variant is reached,
still without a scan, and a page with few variants costs no tag check on
its hits.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote, urlsplit

from django.utils.encoding import escape_uri_path

from django_dogpile import records
from django_dogpile.faces.common import face_cache, safe_key

__all__ = ["INDEX_SIZE", "index_key", "invalidate_page", "note_variant", "page_keys", "url_tag"]

#: variants remembered per path (the most recently stored)
INDEX_SIZE = 256
#: the note's mark of a URL that had more variants than it keeps
_MANY = "~many"


def _path_of(url: str) -> str:
    """The path and query of ``url`` (a path, or a full URL), the path
    percent-encoded as ``request.get_full_path()`` gives it (``/café/`` and
    ``/caf%C3%A9/`` are one page)."""
    parts = urlsplit(url)
    path = escape_uri_path(unquote(parts.path or "/"))
    return f"{path}?{parts.query}" if parts.query else path


def index_key(url: str, key_prefix: str | None = None) -> str:
    """The key of the note of ``url``'s variants."""
    digest = hashlib.md5(_path_of(url).encode(), usedforsecurity=False).hexdigest()
    return safe_key("dogpile.page.index", key_prefix or "", digest)


def url_tag(url: str, key_prefix: str | None = None) -> str:
    """The tag every variant of ``url`` carries once it has more than
    :data:`INDEX_SIZE` (see the module docstring)."""
    return "url:" + index_key(url, key_prefix)


def note_variant(cache: Any, url: str, key_prefix: str | None, key: str, keep_for: float | None) -> bool:
    """Note that the page at ``url`` was stored under ``key``, for ``keep_for``
    seconds; return True if the URL has more variants than the note keeps
    (the page must then carry :func:`url_tag`)."""
    where = index_key(url, key_prefix)
    known = cache.get(where)
    if (
        isinstance(known, dict)
        and key in known
        and (keep_for is None or records.now() - known[key] < keep_for / 2)
    ):
        return _MANY in known  # the usual case: the same variant regenerated
    binding = getattr(cache, "binding", None)
    if binding is None:
        return _add(cache, where, key, keep_for)
    # a lock of its own: a write to the note itself would revoke the note's lease
    lock = where + ".lock"
    with binding.exclusive(lock, cache.make_and_validate_key(lock)):
        return _add(cache, where, key, keep_for)


def _add(cache: Any, where: str, key: str, keep_for: float | None) -> bool:
    known = cache.get(where)
    known = dict(known) if isinstance(known, dict) else {}
    untagged = known.pop(_MANY, None)  # the variants stored before the mark
    if untagged is None and len(known) >= INDEX_SIZE and key not in known:
        untagged = tuple(known)  # the mark: this key and the later ones are tagged
    known[key] = records.now()
    if len(known) > INDEX_SIZE:
        known = dict(sorted(known.items(), key=lambda item: item[1])[-INDEX_SIZE:])
    if untagged is not None:
        known[_MANY] = untagged
    cache.set(where, known, keep_for)
    return untagged is not None


def page_keys(url: str, *, cache: str | None = None, key_prefix: str | None = None) -> list[str]:
    """The keys of the stored variants of the page at ``url``.

    :param url: a path (``/report/?q=1``) or a full URL (its path and query
     are used: the variants of every host are listed).
    :param cache: the alias the page face uses (``dogpile_cache_page``'s
     ``cache``, ``CACHE_MIDDLEWARE_ALIAS`` for the per-site cache).
    :param key_prefix: the face's ``key_prefix`` (``CACHE_MIDDLEWARE_KEY_PREFIX``).
    """
    store = face_cache(cache)
    known = store.get(index_key(url, key_prefix))
    if not isinstance(known, dict):
        return []
    untagged = known.pop(_MANY, ())
    found = [*untagged, *(k for k in sorted(known, key=known.__getitem__) if k not in untagged)]
    return [key for key in found if store.has_key(key) or _stale(store, key)]


def _stale(store: Any, key: str) -> bool:
    """True if ``key`` still holds a record, fresh or stale (a DogpileCache)."""
    binding = getattr(store, "binding", None)
    if binding is None:
        return False
    raw = store.store.get(store.make_and_validate_key(key), records.MISSING)
    return binding.live(raw, records.now())


def invalidate_page(
    url: str, *, cache: str | None = None, key_prefix: str | None = None, hard: bool = False
) -> int:
    """Make every stored variant of the page at ``url`` stale but servable
    (the next request regenerates it once; others get the old page
    meanwhile), or delete them with ``hard=True``.  Return how many the
    note lists (a URL with more variants than it keeps: those, and its tag
    reaches the others).  On a cache that is not a DogpileCache they are
    deleted."""
    store = face_cache(cache)
    keys = page_keys(url, cache=cache, key_prefix=key_prefix)
    soft = not hard and hasattr(store, "invalidate")
    for key in keys:
        if soft:
            store.invalidate(key)
        else:
            store.delete(key)
    known = store.get(index_key(url, key_prefix))
    if isinstance(known, dict) and _MANY in known and hasattr(store, "invalidate_tags"):
        store.invalidate_tags(url_tag(url, key_prefix), hard=hard)
    return len(keys)

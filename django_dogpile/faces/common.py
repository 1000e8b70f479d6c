"""What the tag and the decorators share: which cache, keys, settings."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import caches

from django_dogpile.conf import get_config, timeout_argument

__all__ = ["check_timeout", "declare", "face_cache", "make_fragment_key", "resolve_alias", "safe_key"]

log = logging.getLogger(__name__)


#: (face, alias given or None) for every decorator made in this process;
#: the system check W003 reads it (it imports the URLconf first).
declared: set[tuple[str, str | None]] = set()
_warned: set[tuple[str, str]] = set()


def declare(face: str, alias: str | None) -> None:
    """Note that ``face`` was configured onto ``alias`` (None: the default)."""
    declared.add((face, alias))


def check_timeout(face: str, timeout: Any, fn: Any, *, finite: bool = False) -> None:
    """Validate a decorator's ``timeout`` when it decorates ``fn``: the rule
    of every timeout argument (None or seconds, not a string); a
    :class:`TypeError` naming the face and the function, at import time
    rather than on every call."""
    name = getattr(fn, "__qualname__", None)
    name = f"{getattr(fn, '__module__', None)}.{name}" if name else repr(fn)
    timeout_argument(timeout, f"{face}(timeout) on {name}", finite=finite)


def resolve_alias(alias: str | None = None, *, fragments: bool = False) -> str:
    """The alias a face uses: ``alias`` if given; else ``DOGPILE["CACHE_ALIAS"]``;
    else, for template fragments, a ``template_fragments`` alias when
    configured (as Django's ``{% cache %}`` does); else ``default``."""
    if alias is None:
        alias = get_config()["CACHE_ALIAS"]
    if alias is None:
        alias = "template_fragments" if fragments and "template_fragments" in settings.CACHES else "default"
    return alias


def face_cache(alias: str | None = None, *, fragments: bool = False, face: str = "") -> Any:
    """Return the cache a face uses (see :func:`resolve_alias`).

    On a cache that is not a DogpileCache the face still works, without
    stampede protection; that is logged once per face and alias (and
    ``manage.py check`` says so as ``django_dogpile.W003``).
    """
    name = resolve_alias(alias, fragments=fragments)
    cache = caches[name]
    if face and not hasattr(cache, "get_or_set_status") and (face, name) not in _warned:
        _warned.add((face, name))
        log.warning(
            "%s uses the cache %r, which is not a DogpileCache: no stampede "
            "protection. Point it at a DogpileCache alias.",
            face,
            name,
        )
    return cache


def _digest(parts: Iterable[Any]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for part in parts:
        h.update(str(part).encode())
        h.update(b":")
    return h.hexdigest()


def safe_key(*parts: str) -> str:
    """Join parts into a key that memcached and Redis always accept."""
    prefix = get_config()["KEY_PREFIX"]
    key = ".".join(p for p in (prefix, *parts) if p)
    if len(key) > 200 or any(ord(c) < 33 or ord(c) == 127 for c in key):
        key = "dogpile.h." + hashlib.sha256(key.encode()).hexdigest()
    return key


def make_fragment_key(fragment_name: str, vary_on: Iterable[Any] | None = None) -> str:
    """Return the cache key of a ``{% dogpile_cache %}`` fragment.

    Django's ``make_template_fragment_key`` exactly (prefixed with
    ``DOGPILE["KEY_PREFIX"]`` when one is set): use either to
    ``invalidate()`` or ``delete()`` a fragment from Python.
    """
    return safe_key("template.cache", fragment_name, _digest(vary_on or ()))

"""``dogpile_cache_page``, the rules deciding what a page face stores, and
the pages of a URL: :func:`page_keys` lists the stored variants of a page,
:func:`invalidate_page` makes them stale (:mod:`django_dogpile.faces.page`,
:mod:`~django_dogpile.faces.visitors`, :mod:`~django_dogpile.faces.page_index`).
The decorator is also importable from :mod:`django_dogpile.decorators`."""

from django_dogpile.faces.page_decorator import dogpile_cache_page
from django_dogpile.faces.page_index import invalidate_page, page_keys
from django_dogpile.faces.visitors import REASONS, own_csrf_flag, per_visitor, uncacheable

__all__ = [
    "REASONS",
    "dogpile_cache_page",
    "invalidate_page",
    "own_csrf_flag",
    "page_keys",
    "per_visitor",
    "uncacheable",
]

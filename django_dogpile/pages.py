"""``dogpile_cache_page`` and the rules deciding what a page face stores
(:mod:`django_dogpile.faces.page`, :mod:`django_dogpile.faces.visitors`);
also importable from :mod:`django_dogpile.decorators`."""

from django_dogpile.faces.page import dogpile_cache_page
from django_dogpile.faces.visitors import REASONS, own_csrf_flag, per_visitor, uncacheable

__all__ = ["REASONS", "dogpile_cache_page", "own_csrf_flag", "per_visitor", "uncacheable"]

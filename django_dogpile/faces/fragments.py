"""``{% dogpile_prefetch %}``: the fragments of a loop read in one round trip.

::

    {% load dogpile %}
    {% dogpile_prefetch "card" product.pk product.updated_at for product in products %}
    {% for product in products %}
        {% dogpile_cache 500 "card" product.pk product.updated_at %}
            ... one product's card ...
        {% enddogpile_cache %}
    {% endfor %}

The prefetch takes the fragment name and the values to vary on of the
``{% dogpile_cache %}`` tags it serves, a ``for NAME in LIST`` over the
items (``for a, b in pairs`` unpacks, as ``{% for %}`` does), and the same
optional ``using="alias"``.  It makes each item's key by the tag's own rule
(:func:`~django_dogpile.faces.common.make_fragment_key`), reads every record
in one ``get_many`` (an ``MGET`` on Redis) and keeps them on the template
context, where each ``{% dogpile_cache %}`` of the same alias and key takes
its own, once, instead of reading it: a 50-card list on a hit is one round
trip, not 50.  A tag takes the record exactly as its own read would have
found it: fresh, it is served; stale or missing, the tag goes on as always
(one caller re-renders it while the others get the stale card).  A tag with
no prefetched record -- another name, a key the prefetch did not make, a
second render of one card -- reads it itself.  The records are kept with
the render of the template that holds the prefetch (its ``{% include %}``
templates see them; a second render of it starts over), keyed by the
store's own key (so a ``KEY_FUNCTION`` that puts a tenant in the key keeps
tenants apart): they are never served to anyone else.  An iterator (a
generator, ``queryset.iterator()``) is not prefetched: it can be read only
once, by the loop.  On a cache that is not a DogpileCache the values found
are served as hits.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.template.base import FilterExpression, Parser, Token

from django_dogpile.faces.common import face_cache, make_fragment_key, resolve_alias
from django_dogpile.records import MISSING, VALUE

__all__ = ["DogpilePrefetchNode", "do_dogpile_prefetch", "prefetched", "serve"]

TAG = "dogpile_prefetch"
#: where a template's render context holds what its prefetches read
_ON_CONTEXT = "django_dogpile.prefetched"


def _identity(cache: Any, key: str) -> Any:
    """What tells a record apart: the store's own key (a ``KEY_FUNCTION``
    may put the tenant in it), never the fragment key alone."""
    if getattr(cache, "dogpile_backend", False):
        b = cache.binding
        return b.ident(b.store_key(key))
    return str(cache.make_key(key))


def prefetched(context: template.Context, cache: Any, alias: str | None, key: str) -> Any:
    """The record a prefetch of this render read for ``key`` of ``alias``
    (taken: once), or :data:`~django_dogpile.records.MISSING`."""
    for level in reversed(context.render_context.dicts):  # this template's, then its includers'
        found: Any = level.get(_ON_CONTEXT)
        if found:
            return found.pop((resolve_alias(alias, fragments=True), _identity(cache, key)), MISSING)
    return MISSING


def serve(cache: Any, key: str, raw: Any, default: Any, timeout: Any, tags: Any = None) -> tuple[Any, str]:
    """``cache.get_or_set_status(key, default, timeout, tags=tags)`` from
    ``raw``, the record a prefetch read for it: its one read already made.
    (Looked up as ``fragments.serve``: the toolbar panel wraps it.)"""
    if not getattr(cache, "dogpile_backend", False):
        return raw, "HIT"  # a plain cache's value
    b = cache.binding
    if b.fresh_hit(key, raw):
        return raw[VALUE], "HIT"
    skey = b.store_key(key)
    found: tuple[Any, str] = cache.regeneration.run(key, skey, raw, default, timeout, b.tags.names(tags))
    return found


def prefetch(cache: Any, skeys: list[str]) -> dict[str, Any]:
    """The records of the store keys ``skeys``, in one ``get_many``.
    (Looked up as a module global: the toolbar panel wraps it.)"""
    found: dict[str, Any] = cache.binding.store.get_many(skeys)
    return found


class DogpilePrefetchNode(template.Node):
    def __init__(
        self,
        fragment_name: str,
        vary_on: list[FilterExpression],
        loopvars: list[str],
        sequence: FilterExpression,
        using: FilterExpression | None,
    ) -> None:
        self.fragment_name = fragment_name
        self.vary_on = vary_on
        self.loopvars = loopvars
        self.sequence = sequence
        self.using = using

    def render(self, context: template.Context) -> str:
        alias = None
        if self.using is not None:
            alias = self.using.resolve(context)
            if alias not in settings.CACHES:
                raise template.TemplateSyntaxError(
                    f"'{TAG}' tag: using={alias!r} is not a cache alias (configured: {', '.join(settings.CACHES)})"
                )
        items = self.sequence.resolve(context, ignore_failures=True)
        if items is None or iter(items) is items:
            # an iterator (a generator, queryset.iterator()) is read once:
            # by the loop, not here
            return ""
        keys = []
        for item in items:
            with context.push(self._bound(item)):
                keys.append(make_fragment_key(self.fragment_name, [v.resolve(context) for v in self.vary_on]))
        if not keys:
            return ""
        cache = face_cache(alias, fragments=True, face="{% dogpile_prefetch %}")
        name = resolve_alias(alias, fragments=True)
        # kept with this template's render (its includes see it; it ends with it)
        found = context.render_context.get(_ON_CONTEXT)
        if found is None:
            found = context.render_context[_ON_CONTEXT] = {}
        if getattr(cache, "dogpile_backend", False):
            b = cache.binding
            skeys = [b.store_key(key) for key in keys]
            read = prefetch(cache, skeys)
            for skey in skeys:
                found[(name, b.ident(skey))] = read.get(skey)  # None: read, and not there
        else:
            for key, value in cache.get_many(keys).items():
                found[(name, _identity(cache, key))] = value
        return ""

    def _bound(self, item: Any) -> dict[str, Any]:
        if len(self.loopvars) == 1:
            return {self.loopvars[0]: item}
        try:
            values = list(item)
        except TypeError:
            values = []
        if len(values) != len(self.loopvars):
            raise ValueError(f"'{TAG}' tag: need {len(self.loopvars)} values to unpack in {item!r}")
        return dict(zip(self.loopvars, values))


def do_dogpile_prefetch(parser: Parser, token: Token) -> DogpilePrefetchNode:
    """Compile ``{% dogpile_prefetch NAME [VARY ...] for VAR in LIST [using="alias"] %}``."""
    bits = token.split_contents()
    using = None
    if len(bits) > 1 and bits[-1].startswith("using="):
        using = parser.compile_filter(bits.pop().partition("=")[2])
    grammar = f'e.g. {{% {TAG} "card" product.pk for product in products %}}'
    if len(bits) < 6 or bits[-2] != "in" or "for" not in bits[2:-2]:
        raise template.TemplateSyntaxError(
            f"'{TAG}' tag takes a fragment name, the values to vary on, then 'for VAR in LIST': {grammar}"
        )
    at = len(bits) - 1 - bits[::-1].index("for")
    loopvars = [v.strip() for v in " ".join(bits[at + 1 : -2]).split(",")]
    if not loopvars or any(not v or " " in v or "|" in v for v in loopvars):
        raise template.TemplateSyntaxError(
            f"'{TAG}' tag got bad loop variables {bits[at + 1 : -2]}: {grammar}"
        )
    return DogpilePrefetchNode(
        bits[1].strip("\"'"),
        [parser.compile_filter(b) for b in bits[2:at]],
        loopvars,
        parser.compile_filter(bits[-1]),
        using,
    )

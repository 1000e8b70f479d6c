"""``{% dogpile_cache %}``: Django's ``{% cache %}`` that never stampedes.

::

    {% load dogpile %}
    {% dogpile_cache 500 sidebar request.user.username using="default" %}
        ... expensive fragment ...
    {% enddogpile_cache %}

The grammar is Django's ``{% cache %}``: a timeout (any expression;
``None`` means the cache's default), a fragment name, any number of values
to vary on, and an optional last ``using="alias"``.  Errors in the tag are
reported when the template is compiled where they can be (a missing
argument, a literal timeout that is not a number), else when it renders
(``using``, an expression, is resolved there, as by Django's tag).  The fragment is rendered through the
cache's ``get_or_set``: when it goes stale one request re-renders it while
the others get the old fragment.  The key is Django's own
(``make_template_fragment_key``), so code that deletes or invalidates a
``{% cache %}`` fragment works unchanged.  With ``BACKGROUND`` the fragment
is re-rendered in a pool thread from a copy of the context taken before the
tag returns.  A fragment that used the visitor's CSRF token
(``{% csrf_token %}``) or showed their messages is rendered for them and
never stored (Django's ``{% cache %}`` would serve the first visitor's token
to everyone).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from django import template
from django.conf import settings
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.utils.safestring import mark_safe

from ..faces import face_cache, make_fragment_key
from ..pages import own_csrf_flag

__all__ = ["DogpileCacheNode", "do_dogpile_cache"]

log = logging.getLogger(__name__)

register = template.Library()

TAG = "dogpile_cache"


class DogpileCacheNode(template.Node):
    def __init__(
        self,
        nodelist: NodeList,
        timeout: FilterExpression,
        fragment_name: str,
        vary_on: list[FilterExpression],
        using: FilterExpression | None,
    ) -> None:
        self.nodelist = nodelist
        self.timeout_var = timeout
        self.fragment_name = fragment_name
        self.vary_on = vary_on
        self.using = using

    def render(self, context: template.Context) -> str:
        try:
            timeout = self.timeout_var.resolve(context)
        except template.VariableDoesNotExist:
            raise template.TemplateSyntaxError(
                f"'{TAG}' tag got an unknown variable: {self.timeout_var.var!r}"
            ) from None
        if timeout is not None:
            try:
                timeout = int(timeout)
            except (ValueError, TypeError):
                raise template.TemplateSyntaxError(
                    f"'{TAG}' tag got a non-integer timeout value: {timeout!r}"
                ) from None
        alias = None
        if self.using is not None:
            try:
                alias = self.using.resolve(context)
            except template.VariableDoesNotExist:
                raise template.TemplateSyntaxError(
                    f"'{TAG}' tag got an unknown variable: {self.using.var!r}"
                ) from None
            if alias not in settings.CACHES:
                raise template.TemplateSyntaxError(
                    f"'{TAG}' tag: using={alias!r} is not a cache alias "
                    f"(configured: {', '.join(settings.CACHES)})"
                )
        cache = face_cache(alias, fragments=True, face="{% dogpile_cache %}")
        key = make_fragment_key(
            self.fragment_name, [v.resolve(context) for v in self.vary_on]
        )
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            value = cache.get_or_set(key, _Render(self.nodelist, context), **kwargs)
        except _NotStored as refused:
            log.debug("fragment %r not stored: %s", self.fragment_name, refused.reason)
            return mark_safe(refused.rendered)
        return mark_safe(value)


class _NotStored(BaseException):
    """A fragment made from this visitor's state: served, never stored.

    A BaseException, so that ``SERVE_STALE_ON_ERROR`` does not take it for
    a failure."""

    def __init__(self, rendered: str, reason: str) -> None:
        self.rendered, self.reason = rendered, reason


def _messages_seen(request: Any) -> bool:
    storage = getattr(request, "_messages", None)
    return bool(storage is not None and getattr(storage, "used", False)
                and getattr(storage, "_loaded_data", None))


class _Render:
    """The creator of a fragment: render the tag's body in a context.

    With ``BACKGROUND`` the cache calls :meth:`detach` in the request's
    thread and renders the copy in a pool thread, while the request goes
    on rendering (and changing) its own context.
    """

    __slots__ = ("nodelist", "context")

    def __init__(self, nodelist: NodeList, context: template.Context) -> None:
        self.nodelist, self.context = nodelist, context

    def __call__(self) -> str:
        request = getattr(self.context, "request", None)
        if request is None:
            return self.nodelist.render(self.context)
        with own_csrf_flag(request):
            used_before = _messages_seen(request)
            rendered = self.nodelist.render(self.context)
            if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
                raise _NotStored(rendered, "csrf")
            if not used_before and _messages_seen(request):
                raise _NotStored(rendered, "messages")
        return rendered

    def detach(self) -> _Render:
        return _Render(self.nodelist, snapshot(self.context))


def snapshot(context: template.Context) -> template.Context:
    """Return a copy of ``context`` whose layers the caller no longer shares.

    ``copy(context)`` copies the stack of layers but not the layers: a
    ``{% for %}`` around the tag would go on changing the loop variable
    under a background render.  Every layer (and the render context's) is
    copied here; the values themselves are shared, read-only.
    """
    copied = copy.copy(context)
    copied.dicts = [dict(layer) for layer in context.dicts]
    render_context = getattr(copied, "render_context", None)
    if render_context is not None:
        render_context.dicts = [dict(layer) for layer in render_context.dicts]
    return copied


@register.tag(TAG)
def do_dogpile_cache(parser: Parser, token: Token) -> DogpileCacheNode:
    """Compile ``{% dogpile_cache TIMEOUT NAME [VARY ...] [using="alias"] %}``."""
    bits = token.split_contents()
    nodelist = parser.parse((f"end{TAG}",))
    parser.delete_first_token()
    if len(bits) < 3:
        raise template.TemplateSyntaxError(
            f"'{TAG}' tag requires at least 2 arguments: a timeout and a "
            f"fragment name, e.g. {{% {TAG} 300 \"sidebar\" %}}"
        )
    using = None
    if bits[-1].startswith("using="):
        using = parser.compile_filter(bits[-1][len("using="):])
        bits = bits[:-1]
        if len(bits) < 3:
            raise template.TemplateSyntaxError(
                f"'{TAG}' tag requires a timeout and a fragment name before using="
            )
    timeout = parser.compile_filter(bits[1])
    if not isinstance(timeout.var, template.Variable) and timeout.var is not None:
        try:
            int(timeout.var)
        except (TypeError, ValueError):
            raise template.TemplateSyntaxError(
                f"'{TAG}' tag got a non-integer timeout value: {timeout.var!r}"
            ) from None
    return DogpileCacheNode(
        nodelist,
        timeout,
        bits[2].strip("\"'"),
        [parser.compile_filter(b) for b in bits[3:]],
        using,
    )

"""``{% dogpile_cache %}``: Django's ``{% cache %}`` that never stampedes.

::

    {% load dogpile %}
    {% dogpile_cache 500 sidebar request.user.username using="default" %}
        ... expensive fragment ...
    {% enddogpile_cache %}

The grammar is Django's ``{% cache %}``: a timeout (any expression;
``None`` means forever, as with Django's tag), a fragment name, any number of values
to vary on, and an optional last ``using="alias"``.  Errors in the tag are
reported when the template is compiled where they can be (a missing
argument, a literal timeout that is not a number), else when it renders
(``using``, an expression, is resolved there, as by Django's tag).  The fragment is rendered through the
cache's ``get_or_set``: when it goes stale one request re-renders it while
the others get the old fragment.  The key is Django's own
(``make_template_fragment_key``), so code that deletes or invalidates a
``{% cache %}`` fragment works unchanged.  With ``BACKGROUND`` the fragment
is re-rendered in a pool thread from a copy of the context taken before the
tag returns, with a request of its own (:func:`detached_request`): the
background render never touches the live request's CSRF state, messages or
session.  A fragment that used the visitor's CSRF token
(``{% csrf_token %}``, ``{{ csrf_token }}``) or looked at their messages
(``{% for %}``, ``{% if messages %}``, ``|length``) is rendered for them and
never stored (Django's ``{% cache %}`` would serve the first visitor's token
to everyone) -- whether or not the page used the token or showed the
messages before the tag.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

from django import template
from django.conf import settings
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context_processors import csrf
from django.utils.safestring import mark_safe

from django_dogpile.engine.tags import tag_names
from django_dogpile.faces import fragments
from django_dogpile.faces.common import face_cache, make_fragment_key
from django_dogpile.faces.fragments import do_dogpile_prefetch, prefetched
from django_dogpile.faces.visitors import own_csrf_flag
from django_dogpile.records import MISSING

__all__ = ["DogpileCacheNode", "detached_request", "do_dogpile_cache", "do_dogpile_prefetch", "snapshot"]

log = logging.getLogger(__name__)

register = template.Library()
register.tag("dogpile_prefetch", do_dogpile_prefetch)  # (django_dogpile.faces.fragments)

TAG = "dogpile_cache"


class DogpileCacheNode(template.Node):
    def __init__(
        self,
        nodelist: NodeList,
        timeout: FilterExpression,
        fragment_name: str,
        vary_on: list[FilterExpression],
        using: FilterExpression | None,
        tags: FilterExpression | None = None,
    ) -> None:
        self.nodelist = nodelist
        self.timeout_var = timeout
        self.fragment_name = fragment_name
        self.vary_on = vary_on
        self.using = using
        self.tags = tags

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
        key = make_fragment_key(self.fragment_name, [v.resolve(context) for v in self.vary_on])
        tagged = {}
        if self.tags is not None:
            names = self._tags(context)  # checked on any cache; used on a DogpileCache
            if getattr(cache, "dogpile_backend", False):
                tagged["tags"] = names
        raw = prefetched(context, cache, alias, key)  # read by a {% dogpile_prefetch %}, if any
        try:
            if raw is MISSING:
                value = cache.get_or_set(key, _Render(self.nodelist, context), timeout, **tagged)
            else:
                render = _Render(self.nodelist, context)
                value = fragments.serve(cache, key, raw, render, timeout, tagged.get("tags"))[0]
        except _NotStored as refused:
            log.debug("fragment %r not stored: %s", self.fragment_name, refused.reason)
            return mark_safe(refused.rendered)
        return mark_safe(value)

    def _tags(self, context: template.Context) -> tuple[str, ...]:
        assert self.tags is not None
        try:
            return tag_names(self.tags.resolve(context), f"'{TAG}' tag")
        except template.VariableDoesNotExist:
            raise template.TemplateSyntaxError(
                f"'{TAG}' tag got an unknown variable: {self.tags.var!r}"
            ) from None
        except TypeError as exc:
            raise template.TemplateSyntaxError(str(exc)) from None


class _NotStored(BaseException):
    """A fragment made from this visitor's state: served, never stored.

    A BaseException, so that ``SERVE_STALE_ON_ERROR`` does not take it for
    a failure."""

    def __init__(self, rendered: str, reason: str) -> None:
        self.rendered, self.reason = rendered, reason


@contextlib.contextmanager
def _own_messages_flag(request: Any) -> Iterator[Callable[[], bool]]:
    """Tell whether the code run inside showed this visitor's messages.

    Iterating the message storage marks it ``used``; a base template that
    showed the messages *before* the tag already did, so the flag is lowered
    for the block (and raised again after it, never lost): what counts is
    whether the fragment itself iterated messages that exist.
    """
    storage = getattr(request, "_messages", None)
    if storage is None or not hasattr(storage, "used"):
        yield lambda: False
        return
    used_before = storage.used
    storage.used = False
    try:
        yield lambda: bool(storage.used and getattr(storage, "_loaded_data", None))
    finally:
        storage.used = used_before or storage.used


class _WatchedMessages:
    """The message storage as the fragment's context sees it: any look at
    it (``{% for %}``, ``{% if messages %}``, ``|length``) is noted."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.looked = False

    def __getattr__(self, name: str) -> Any:
        self.looked = True
        return getattr(self._storage, name)

    def __iter__(self) -> Any:
        self.looked = True
        return iter(self._storage)

    def __len__(self) -> int:
        self.looked = True
        return len(self._storage)

    def __bool__(self) -> bool:
        self.looked = True
        return len(self._storage) > 0

    def __contains__(self, item: Any) -> bool:
        self.looked = True
        return item in self._storage


class _Watch:
    def __init__(self, storage: Any, watchers: list[_WatchedMessages]) -> None:
        self.storage, self.watchers = storage, watchers

    def showed_messages(self) -> bool:
        """A look at messages that exist (an empty storage shows nothing)."""
        return any(w.looked for w in self.watchers) and len(self.storage) > 0


@contextlib.contextmanager
def _watched(context: template.Context, request: Any) -> Iterator[_Watch]:
    """Make the fragment's own uses of visitor state observable.

    * ``csrf_token``: the context's lazy token may have been evaluated
      before the tag (a form in the header), and a second use of it calls
      nothing, so nothing would raise the CSRF flag: for the block each
      layer gets a fresh lazy token, whose use calls ``get_token`` again.
    * ``messages``: wrapped, so a ``{% if messages %}`` or ``|length`` (which
      never mark the storage used) counts too.

    The layers get their own values back afterwards.
    """
    storage = getattr(request, "_messages", None)
    watchers: list[_WatchedMessages] = []
    saved: list[tuple[dict[str, Any], str, Any]] = []
    fresh_token: Any = None
    for layer in context.dicts:
        if "csrf_token" in layer:
            if fresh_token is None:
                fresh_token = csrf(request)["csrf_token"]
            saved.append((layer, "csrf_token", layer["csrf_token"]))
            layer["csrf_token"] = fresh_token
        if storage is not None and layer.get("messages") is storage:
            watcher = _WatchedMessages(storage)
            watchers.append(watcher)
            saved.append((layer, "messages", storage))
            layer["messages"] = watcher
    try:
        yield _Watch(storage if storage is not None else (), watchers)
    finally:
        for layer, name, value in saved:
            layer[name] = value


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
        with (
            own_csrf_flag(request),
            _own_messages_flag(request) as showed_messages,
            _watched(self.context, request) as watched,
        ):
            rendered = self.nodelist.render(self.context)
            if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
                raise _NotStored(rendered, "csrf")
            if showed_messages() or watched.showed_messages():
                raise _NotStored(rendered, "messages")
        return rendered

    def detach(self) -> _Render:
        return _Render(self.nodelist, snapshot(self.context))


def snapshot(context: template.Context) -> template.Context:
    """Return a copy of ``context`` whose state the caller no longer shares.

    ``copy(context)`` copies the stack of layers but not the layers: a
    ``{% for %}`` around the tag would go on changing the loop variable
    under a background render.  Every layer (and the render context's) is
    copied here; the values themselves are shared, read-only -- except the
    request, whose per-visitor state a render writes to (the CSRF flag and
    cookie, the messages' ``used`` mark, the session's ``accessed``): the
    copy gets a request of its own (:func:`detached_request`), and the
    context's ``request``, ``csrf_token`` and ``messages`` point at it.
    """
    copied = copy.copy(context)
    copied.dicts = [dict(layer) for layer in context.dicts]
    render_context = getattr(copied, "render_context", None)
    if render_context is not None:
        render_context.dicts = [dict(layer) for layer in render_context.dicts]
    request = getattr(context, "request", None)
    if request is not None:
        own = detached_request(request)
        copied.request = own  # type: ignore[attr-defined]  # a RequestContext's
        messages = getattr(request, "_messages", None)
        for layer in copied.dicts:
            for name, value in list(layer.items()):
                if value is request:
                    layer[name] = own
                elif name == "csrf_token":
                    layer[name] = csrf(own)["csrf_token"]
                elif messages is not None and value is messages:
                    layer[name] = own._messages
    return copied


def detached_request(request: Any) -> Any:
    """A shallow copy of ``request`` with its own per-visitor state.

    Its ``META`` (where ``get_token`` raises the CSRF cookie flag and puts a
    new visitor's secret), its message storage (whose ``used`` mark deletes
    messages) and its session object (``accessed``/``modified``) are copies:
    a render in another thread cannot change what the live request's
    middleware does with its response.
    """
    own = copy.copy(request)
    own.META = dict(request.META)
    storage = getattr(request, "_messages", None)
    if storage is not None:
        mine = copy.copy(storage)
        if hasattr(storage, "_queued_messages"):
            mine._queued_messages = list(storage._queued_messages)
        if hasattr(storage, "_loaded_data"):
            mine._loaded_data = list(storage._loaded_data)
        own._messages = mine
    session = getattr(request, "session", None)
    if session is not None:
        own.session = copy.copy(session)
    return own


@register.tag(TAG)
def do_dogpile_cache(parser: Parser, token: Token) -> DogpileCacheNode:
    """Compile ``{% dogpile_cache TIMEOUT NAME [VARY ...] [tags=...] [using="alias"] %}``."""
    bits = token.split_contents()
    nodelist = parser.parse((f"end{TAG}",))
    parser.delete_first_token()
    if len(bits) < 3:
        raise template.TemplateSyntaxError(
            f"'{TAG}' tag requires at least 2 arguments: a timeout and a "
            f'fragment name, e.g. {{% {TAG} 300 "sidebar" %}}'
        )
    named: dict[str, FilterExpression] = {}
    while len(bits) > 3 and bits[-1].split("=", 1)[0] in ("using", "tags"):
        name, _, value = bits.pop().partition("=")
        if name in named:
            raise template.TemplateSyntaxError(f"'{TAG}' tag got {name}= twice")
        named[name] = parser.compile_filter(value)
    if bits[-1].split("=", 1)[0] in ("using", "tags"):
        raise template.TemplateSyntaxError(
            f"'{TAG}' tag requires a timeout and a fragment name before {bits[-1].split('=', 1)[0]}="
        )
    using = named.get("using")
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
        named.get("tags"),
    )

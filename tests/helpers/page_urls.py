"""Views for the page-face safety tests, each behind several faces:

``/dl/`` dogpile_cache_page over locmem, ``/dr/`` over Redis, ``/dn/`` over
Redis with NEAR_CACHE, ``/dm/`` over memcached; ``/jl/``, ``/jr/``, ``/jm/``
Django's own ``cache_page`` over the same stores, so that a test can run one
scenario through ours and Django's and compare.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone, translation
from django.views.decorators.cache import cache_page
from django.views.decorators.http import etag

from django_dogpile.decorators import dogpile_cache_page

CALLS: Counter[str] = Counter()
STATUS = {"code": 200}
_lock = threading.Lock()


def count(name: str) -> int:
    with _lock:
        CALLS[name] += 1
        return CALLS[name]


def plain(request):
    n = count("plain")
    time.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse(f"plain {n}")


def cart(request):
    """Puts a cart id in the session: the page is this visitor's."""
    count("cart")
    cart_id = request.session.setdefault("cart", f"cart-{CALLS['cart']}")
    return HttpResponse(f"your cart: {cart_id}")


def add_message(request):
    messages.info(request, "Welcome back (account #4711)")
    return HttpResponseRedirect(request.GET.get("next", "/"))


def home(request):
    count("home")
    shown = " | ".join(str(m) for m in messages.get_messages(request))
    return HttpResponse(f"home [{shown}]")


def lang(request):
    count("lang")
    return HttpResponse(f"language={translation.get_language()}")


def zone(request):
    count("zone")
    return HttpResponse(f"zone={timezone.get_current_timezone_name()}")


_FORM = engines["django"].from_string('<form method="post">{% csrf_token %}<input name="q"></form>')


def form(request):
    count("form")
    return HttpResponse(_FORM.render({}, request))


def varies(request):
    count("varies")
    time.sleep(float(request.GET.get("sleep", 0)))
    response = HttpResponse(f"accept-language={request.headers.get('Accept-Language')}")
    response["Vary"] = "Accept-Language"
    return response


@etag(lambda request: '"v1"')
def tagged(request):
    count("tagged")
    return HttpResponse("tagged")


def flaky(request):
    count("flaky")
    time.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse(f"flaky {CALLS['flaky']}", status=STATUS["code"])


def directive(request):
    count("directive")
    response = HttpResponse("directive")
    response["Cache-Control"] = request.GET.get("cc", "public")
    return response


async def async_plain(request):
    count("async_plain")
    await asyncio.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse("async plain")


VIEWS = {
    "plain": plain,
    "cart": cart,
    "home": home,
    "lang": lang,
    "zone": zone,
    "form": form,
    "varies": varies,
    "tagged": tagged,
    "flaky": flaky,
    "directive": directive,
    "async-plain": async_plain,
}

FACES = {
    "dl": lambda: dogpile_cache_page(60, cache="dp_locmem"),
    "dr": lambda: dogpile_cache_page(60, cache="dp_redis"),
    "dn": lambda: dogpile_cache_page(60, cache="dp_near"),
    "dm": lambda: dogpile_cache_page(60, cache="dp_memcached"),
    "ds": lambda: dogpile_cache_page(60, cache="dp_stale"),
    "jl": lambda: cache_page(60, cache="locmem"),
    "jr": lambda: cache_page(60, cache="redis"),
    "jm": lambda: cache_page(60, cache="memcached"),
}

urlpatterns = [path("add-message/", add_message)] + [
    path(f"{face}/{name}/", make()(view), name=f"{face}-{name}")
    for face, make in FACES.items()
    for name, view in VIEWS.items()
    if not (face.startswith("j") and name.startswith("async"))
]


def vary_star(request):
    count("vary_star")
    response = HttpResponse("star")
    response["Vary"] = "*"
    return response


def whoami(request):
    count("whoami")
    user = request.user
    return HttpResponse(f"hello {user.username if user.is_authenticated else 'anonymous'}")


EXTRA = {"vary-star": vary_star, "whoami": whoami}
urlpatterns += [
    path(f"{face}/{name}/", make()(view)) for face, make in FACES.items() for name, view in EXTRA.items()
]


_T = engines["django"].from_string


def tr_session(request):
    count("tr_session")
    return TemplateResponse(request, _T("cart={{ request.session.cart }}"))


def tr_csrf(request):
    count("tr_csrf")
    return TemplateResponse(request, _T("token={% csrf_token %}"))


def tr_messages(request):
    count("tr_messages")
    return TemplateResponse(request, _T("messages={% for m in messages %}{{ m }}{% endfor %}"))


def set_cart(request):
    request.session["cart"] = request.GET["v"]
    return HttpResponse("ok")


def session_key(request):
    count("session_key")
    return HttpResponse(f"cart of session {request.session.session_key}")


def fragment_csrf(request):
    count("fragment_csrf")
    return HttpResponse(
        _T("{% load dogpile %}{% dogpile_cache 60 csrffrag %}{% csrf_token %}{% enddogpile_cache %}").render(
            {}, request
        )
    )


async def async_varies(request):
    count("async_varies")
    await asyncio.sleep(float(request.GET.get("sleep", 0)))
    response = HttpResponse(f"accept-language={request.headers.get('Accept-Language')}")
    response["Vary"] = "Accept-Language"
    return response


MORE = {
    "tr-session": tr_session,
    "tr-csrf": tr_csrf,
    "tr-messages": tr_messages,
    "session-key": session_key,
    "fragment-csrf": fragment_csrf,
    "async-varies": async_varies,
}
urlpatterns += [path("set-cart/", set_cart)] + [
    path(f"{face}/{name}/", make()(view))
    for face, make in FACES.items()
    for name, view in MORE.items()
    if not (face.startswith("j") and name.startswith("async"))
]


def note(request):
    """Adds a message without showing it (it shows on a later page)."""
    count("note")
    messages.info(request, "noted (account #4711)")
    return HttpResponse("noted")


def touch_session(request):
    count("touch_session")
    return HttpResponse(f"items={len(request.session.items())}")


urlpatterns += [
    path(f"{face}/{name}/", make()(view))
    for face, make in FACES.items()
    for name, view in {"note": note, "touch-session": touch_session}.items()
]

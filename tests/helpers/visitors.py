"""Pages whose fragments sit beside one visitor's state: flash messages shown
before, inside or after a ``{% dogpile_cache %}`` block, and a form whose
CSRF token is rendered next to a fragment that ``BACKGROUND`` re-renders."""

from __future__ import annotations

import itertools
import time

from django.contrib import messages
from django.http import HttpResponse
from django.template import engines
from django.urls import path

_renders = itertools.count(1)

MESSAGES = "{% for m in messages %}<p class=msg>{{ m }}</p>{% endfor %}"
_LAYOUTS = {
    "before": MESSAGES + "{% dogpile_cache 300 'box' using=alias %}box {{ n }}{% enddogpile_cache %}",
    "inside": "{% dogpile_cache 300 'box' using=alias %}box {{ n }}" + MESSAGES + "{% enddogpile_cache %}",
    "after": "{% dogpile_cache 300 'box' using=alias %}box {{ n }}{% enddogpile_cache %}" + MESSAGES,
    "before-and-inside": MESSAGES
    + "{% dogpile_cache 300 'box' using=alias %}box {{ n }}"
    + MESSAGES
    + "{% enddogpile_cache %}",
}
#: the token used before the tag (a logout form in the header), then inside it
TOKEN_TWICE = {
    "tag": "<header><form>{% csrf_token %}</form></header>"
    "{% dogpile_cache 300 'withform' using=alias %}<form id=frag>{% csrf_token %}</form>{% enddogpile_cache %}",
    "value": "<i>{{ csrf_token }}</i>|"
    "{% dogpile_cache 300 'withvalue' using=alias %}<b>{{ csrf_token }}</b>{% enddogpile_cache %}",
}
#: a fragment that only asks whether there are messages
COUNT = (
    "{% dogpile_cache 300 'count' using=alias %}{% if messages %}<b>you have {{ messages|length }}"
    " messages</b>{% endif %}box {{ n }}{% enddogpile_cache %}" + MESSAGES
)
FORM = (
    "<form method=post action='/form/'>{% csrf_token %}<button>send</button></form>"
    "{% dogpile_cache 300 'side' using=alias %}side {{ slow }}{% enddogpile_cache %}"
)


def _render(request, source, **context):
    template = engines["django"].from_string("{% load dogpile %}" + source)
    return HttpResponse(template.render(context, request))


def layout(request, where):
    """A page in one layout; ``?charge=NAME`` adds NAME's payment message."""
    if "charge" in request.GET:
        messages.success(request, f"{request.GET['charge']}, your card ending 4242 was charged")
    return _render(request, _LAYOUTS[where], alias=request.GET.get("alias", "dp_locmem"), n=next(_renders))


def token_twice(request, how):
    return _render(request, TOKEN_TWICE[how], alias=request.GET.get("alias", "dp_locmem"))


def count(request):
    if "charge" in request.GET:
        messages.success(request, f"{request.GET['charge']}, your card ending 4242 was charged")
    return _render(request, COUNT, alias="dp_locmem", n=next(_renders))


def form(request):
    if request.method == "POST":
        return HttpResponse("posted")

    def slow():
        time.sleep(0.3)  # the background render is still running when the response goes
        return next(_renders)

    return _render(request, FORM, alias="dp_bg", slow=slow)


urlpatterns = [
    path("layout/<str:where>/", layout),
    path("form/", form),
    path("token-twice/<str:how>/", token_twice),
    path("count/", count),
]

"""A shop page whose template shows a tagged fragment and a tagged
``cached()`` value: their tags bubble up to the page."""

from __future__ import annotations

from collections import Counter

from django.http import HttpResponse
from django.template import engines
from django.urls import path

from django_dogpile.decorators import cached, dogpile_cache_page

RUNS: Counter[str] = Counter()
PRICES = {1: 10}

TEMPLATE = engines["django"].from_string(
    "{% load dogpile %}shelf {{ run }} | "
    '{% dogpile_cache 300 "sidebar" tags=sidebar_tags using="dp_locmem" %}sidebar {{ sidebar_run }}{% enddogpile_cache %}'
    " | price {{ price }}"
)


@cached(300, cache="dp_locmem", tags=lambda pk: [f"product:{pk}"])
def price_of(pk):
    RUNS["price"] += 1
    return PRICES[pk]


class SidebarRun:
    def __str__(self):
        RUNS["sidebar"] += 1
        return str(RUNS["sidebar"])


def shelf(request):
    RUNS["shelf"] += 1
    context = {"run": RUNS["shelf"], "sidebar_tags": ["sidebar", "menu"], "sidebar_run": SidebarRun()}
    context["price"] = price_of(1)
    return HttpResponse(TEMPLATE.render(context, request))


def by_category(request, slug):
    RUNS[f"category:{slug}"] += 1
    return HttpResponse(f"{slug} {RUNS[f'category:{slug}']}")


urlpatterns = [
    path("shelf/", dogpile_cache_page(300, cache="dp_locmem")(shelf)),
    path("cdn/", dogpile_cache_page(300, cache="dp_locmem", tags=["shop"], cdn=True)(shelf)),
    path(
        "cdn-odd/",
        dogpile_cache_page(
            300, cache="dp_locmem", tags=["shop", "a b", "x,y", "new\nline", "café"], cdn=True
        )(shelf),
    ),
    path(
        "c/<slug:slug>/",
        dogpile_cache_page(300, cache="dp_redis", tags=lambda request, slug: [f"category:{slug}"])(
            by_category
        ),
    ),
]

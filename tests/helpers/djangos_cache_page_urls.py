"""A URLconf with a view under Django's own ``cache_page`` over a
DogpileCache alias (what ``django_dogpile.W006`` warns about)."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.cache import cache_page


def report(request):
    return HttpResponse("report")


inner = [path("report/", cache_page(60, cache="dp_locmem")(report))]
urlpatterns = [path("plain/", cache_page(60, cache="locmem")(report)), path("reports/", include(inner))]

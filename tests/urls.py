"""Views for the face tests."""

import threading
import time

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views import View

from django_dogpile.decorators import dogpile_cache_page

CALLS = {"n": 0}
_lock = threading.Lock()


def count():
    with _lock:
        CALLS["n"] += 1
        return CALLS["n"]


@dogpile_cache_page(60, cache="dp_locmem")
def page(request):
    """A page view."""
    n = count()
    time.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse(f"page {n}")


@dogpile_cache_page(60, cache="dp_locmem")
def whoami(request):
    count()
    name = request.user.username if request.user.is_authenticated else "anonymous"
    return HttpResponse(f"hello {name}")


@dogpile_cache_page(60, cache="dp_locmem")
def cookie_setter(request):
    count()
    response = HttpResponse("cookie")
    response.set_cookie("c", "1")
    return response


@dogpile_cache_page(60, cache="dp_locmem")
def private(request):
    count()
    time.sleep(float(request.GET.get("sleep", 0)))
    response = HttpResponse("private")
    response["Cache-Control"] = "private"
    return response


@dogpile_cache_page(None, cache="dp_forever")
def forever(request):
    return HttpResponse(f"forever {count()}")


@dogpile_cache_page(60, cache="dp_locmem")
def sometimes_private(request):
    n = count()
    response = HttpResponse(f"call {n}")
    if n == 1:
        response["Cache-Control"] = "private"
    return response


@dogpile_cache_page(60, cache="dp_locmem")
def varies(request):
    count()
    response = HttpResponse(f"lang {request.headers.get('Accept-Language', '')}")
    response["Vary"] = "Accept-Language"
    return response


@dogpile_cache_page(60, cache="dp_locmem")
def status(request):
    count()
    return HttpResponse("nope", status=int(request.GET.get("code", 404)))


@dogpile_cache_page(60, cache="dp_locmem")
def stream(request):
    count()
    return StreamingHttpResponse(iter([b"a", b"b"]))


@dogpile_cache_page(60, cache="dp_locmem")
async def async_page(request):
    import asyncio

    count()
    await asyncio.sleep(float(request.GET.get("sleep", 0)))
    return HttpResponse("async")


class ClassView(View):
    def get(self, request):
        count()
        return HttpResponse("class")


urlpatterns = [
    path("page/", page),
    path("whoami/", whoami),
    path("cookie/", cookie_setter),
    path("private/", private),
    path("sometimes-private/", sometimes_private),
    path("forever/", forever),
    path("varies/", varies),
    path("status/", status),
    path("stream/", stream),
    path("async/", async_page),
    path("class/", dogpile_cache_page(60, cache="dp_locmem")(ClassView.as_view())),
]

import django
from django.conf import settings
from django.urls import include, path

from testproject.demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("report/", views.report, name="report"),
    path("report/plain/", views.report_plain, name="report-plain"),
    path("report/async/", views.report_async, name="report-async"),
    path("floor/", views.floor, name="floor"),
    path("floor/async/", views.floor_async, name="floor-async"),
    path("fragment/", views.fragment, name="fragment"),
    path("fragment/plain/", views.fragment_plain, name="fragment-plain"),
    path("function/", views.function, name="function"),
    path("function/plain/", views.function_plain, name="function-plain"),
    path("shop/", views.shop, name="shop"),
    path("shop/change/", views.shop_change, name="shop-change"),
    path("stats/", views.stats, name="stats"),
    path("panel/", views.panel, name="panel"),
]
if getattr(settings, "TOOLBAR", False):  # ./dev demo: django-debug-toolbar with the Dogpile panel
    urlpatterns.append(path("__debug__/", include("debug_toolbar.urls")))

if django.VERSION >= (5, 0):  # Django's cache_page wraps async views from 5.0 on
    urlpatterns.append(path("report/async/plain/", views.report_async_plain, name="report-async-plain"))

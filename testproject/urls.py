from django.urls import path

from testproject.demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("report/", views.report, name="report"),
    path("report/plain/", views.report_plain, name="report-plain"),
    path("fragment/", views.fragment, name="fragment"),
    path("function/", views.function, name="function"),
    path("stats/", views.stats, name="stats"),
]

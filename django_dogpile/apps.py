"""The Django app: add ``"django_dogpile"`` to INSTALLED_APPS."""

from __future__ import annotations

from django.apps import AppConfig

from django_dogpile.conf import warn_if_not_installed

__all__ = ["DogpileConfig", "warn_if_not_installed"]


class DogpileConfig(AppConfig):
    name = "django_dogpile"
    verbose_name = "django-dogpile"

    def ready(self) -> None:
        from django_dogpile import (
            checks,  # noqa: F401 - registers the system checks
            otel,
        )

        otel.apply()  # DOGPILE["OPENTELEMETRY"]

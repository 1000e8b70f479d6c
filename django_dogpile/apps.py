"""The Django app: add ``"django_dogpile"`` to INSTALLED_APPS."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["DogpileConfig"]


class DogpileConfig(AppConfig):
    name = "django_dogpile"
    verbose_name = "django-dogpile"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks

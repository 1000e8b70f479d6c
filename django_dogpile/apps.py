"""The Django app: add ``"django_dogpile"`` to INSTALLED_APPS."""

from __future__ import annotations

import logging

from django.apps import AppConfig, apps

__all__ = ["DogpileConfig", "warn_if_not_installed"]

log = logging.getLogger(__name__)

_warned = False


class DogpileConfig(AppConfig):
    name = "django_dogpile"
    verbose_name = "django-dogpile"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks


def warn_if_not_installed() -> None:
    """Log a warning, once per process, when the app is not installed.

    Without the app, ``{% load dogpile %}`` fails with Django's bare "'dogpile'
    is not a registered tag library" and ``manage.py check`` runs none of our
    checks.  DogpileCache calls this when it is built: CACHES names it whether
    or not the app is installed, and Django's own cache checks build every
    alias (``caches.W003``), so ``manage.py check`` and ``runserver`` print
    this at once.  It is not a system check: one registered when
    ``django_dogpile.cache`` is imported would not run, because that import
    happens inside the check run, after Django has listed the checks to run.
    Nor does it patch Django's template error: no public hook exists.  A
    warning, not an error: the backend works without the app.
    """
    global _warned
    if _warned or not apps.apps_ready or apps.is_installed("django_dogpile"):
        return
    _warned = True
    log.warning(
        'DogpileCache is used but "django_dogpile" is not in INSTALLED_APPS: '
        "{% load dogpile %} fails (\"'dogpile' is not a registered tag library\") "
        "and manage.py check skips the django_dogpile checks. "
        'Add "django_dogpile" to INSTALLED_APPS.'
    )

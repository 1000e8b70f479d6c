"""Sphinx configuration for the django-dogpile documentation.

Build it with ``./dev docs`` (warnings are errors).  The API reference is
autodoc over the public modules, which import Django: so Django is set up
here with the smallest settings that load the app and one DogpileCache.
"""

from __future__ import annotations

import os
import sys

import django
from django.conf import settings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["django_dogpile"],
        CACHES={
            "store": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "default": {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "store"},
        },
        USE_TZ=True,
    )
    django.setup()

import django_dogpile  # noqa: E402  (needs the settings above)

project = "django-dogpile"
author = "The django-dogpile contributors"
copyright = "the django-dogpile contributors"
release = django_dogpile.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

root_doc = "index"
exclude_patterns = ["_build"]
# ``code`` in the docstrings and pages is inline code, not a cross-reference.
default_role = "literal"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Show ``DEFAULT_TIMEOUT`` as written, not as ``<object object>``.
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_theme_options = {
    "description": "Stampede-proof caching for Django",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []

"""Settings to run Django's own cache tests against DogpileCache."""

import os

SECRET_KEY = "django-suite"
USE_TZ = False
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "cache",  # Django's test app (models for the model-pickling tests)
    "django_dogpile",
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
MIDDLEWARE = []
ROOT_URLCONF = None
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
REDIS_URL = os.environ.get("DOGPILE_TEST_REDIS_URL", "redis://127.0.0.1:1/0")

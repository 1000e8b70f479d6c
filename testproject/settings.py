"""Demo settings: locmem by default, Redis when DOGPILE_REDIS_URL is set."""

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "demo-only-not-secret"
DEBUG = os.environ.get("DEMO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_dogpile",
    "testproject.demo",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    # DEMO_DB: another SQLite file (the tests and benchmarks/soak use a temporary one)
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
TIME_ZONE = "UTC"

#: seconds the slow parts take, and how long cached things stay fresh
DEMO_SLOW = float(os.environ.get("DEMO_SLOW", "0.5"))
DEMO_TIMEOUT = int(os.environ.get("DEMO_TIMEOUT", "5"))

#: benchmarks/soak and the tests set these; the defaults suit a person
DEMO_LOCK_TIMEOUT = float(os.environ.get("DEMO_LOCK_TIMEOUT", "30"))
DEMO_RUNS_LOG = os.environ.get("DEMO_RUNS_LOG")  # append one line per slow run
DEMO_FAIL_FILE = os.environ.get("DEMO_FAIL_FILE")  # while it exists, slow work raises

REDIS_URL = os.environ.get("DOGPILE_REDIS_URL")
if REDIS_URL:
    STORE = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            # a Redis outage degrades to computing directly instead of 500s
            "IGNORE_EXCEPTIONS": os.environ.get("DEMO_REDIS_IGNORE_EXCEPTIONS", "1") == "1",
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 2,
        },
    }
else:
    STORE = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "demo"}

CACHES = {
    "store": STORE,
    # the dogpile-protected cache every face uses
    "default": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "store",
        "TIMEOUT": DEMO_TIMEOUT,
        "OPTIONS": {
            "GRACE": 600,
            "LOCK_TIMEOUT": DEMO_LOCK_TIMEOUT,
            # a failing view: keep serving the stale page (the error is logged)
            "SERVE_STALE_ON_ERROR": True,
            # ... and retry the failing work once a second, not on every request
            "RETRY_AFTER": 1,
            # per-key counters for the stats page (the 200 most recent keys)
            "KEY_STATS": 200,
        },
    },
    # plain Django caching on the same store, for the comparison
    "plain": {**STORE, "KEY_PREFIX": "plain"},
    # view runs per second for the stats page's timeline (demo/timeline.py):
    # on Redis shared by every process; on locmem apart from the store, whose
    # 300 entries it must not cull
    "timeline": (
        {**STORE, "KEY_PREFIX": "timeline"}
        if REDIS_URL
        else {**STORE, "LOCATION": "demo-timeline", "OPTIONS": {"MAX_ENTRIES": 2000}}
    ),
}
# the /panel/ page's fragment: stale values made again in a pool thread
CACHES["background"] = {
    "BACKEND": "django_dogpile.cache.DogpileCache",
    "LOCATION": "store",
    "KEY_PREFIX": "background",
    "OPTIONS": {"GRACE": 600, "BACKGROUND": True, "LOCK_TIMEOUT": DEMO_LOCK_TIMEOUT},
}
DOGPILE = {"CACHE_ALIAS": "default", "TIMEOUT": DEMO_TIMEOUT}

# django-debug-toolbar with the Dogpile panel (./dev demo sets DEMO_TOOLBAR=1;
# off by default: the benchmarks and the soak load these pages from 127.0.0.1)
TOOLBAR = (
    DEBUG and os.environ.get("DEMO_TOOLBAR") == "1" and importlib.util.find_spec("debug_toolbar") is not None
)
if TOOLBAR:
    INSTALLED_APPS += ["django.contrib.staticfiles", "debug_toolbar"]
    MIDDLEWARE.insert(0, "debug_toolbar.middleware.DebugToolbarMiddleware")
    STATIC_URL = "static/"
    INTERNAL_IPS = ["127.0.0.1"]
    DEBUG_TOOLBAR_PANELS = [
        "debug_toolbar.panels.timer.TimerPanel",
        "debug_toolbar.panels.request.RequestPanel",
        "debug_toolbar.panels.sql.SQLPanel",
        "debug_toolbar.panels.templates.TemplatesPanel",
        "debug_toolbar.panels.cache.CachePanel",
        "django_dogpile.toolbar.DogpilePanel",
    ]
    # DEMO_TOOLBAR_RENDER=1: the panels' content inline in the page (tests read it)
    DEBUG_TOOLBAR_CONFIG = {"RENDER_PANELS": os.environ.get("DEMO_TOOLBAR_RENDER") == "1"}

# benchmarks/pages.py sets these two.  DEMO_STATS_INTERVAL=0: no process
# publishes its counters into Redis, so every Redis command in a round is a
# page request's.  DEMO_NEAR_CACHE=1: the near cache of issue 14 on the
# DogpileCache alias; a package without it reports an unknown option
# (django_dogpile.E004) and the benchmark leaves that column out.
if "DEMO_STATS_INTERVAL" in os.environ:
    DOGPILE["STATS_INTERVAL"] = float(os.environ["DEMO_STATS_INTERVAL"])
if os.environ.get("DEMO_NEAR_CACHE") == "1":
    CACHES["default"]["OPTIONS"]["NEAR_CACHE"] = {
        "MAX_ENTRIES": 1000,
        "MAX_BYTES": 16 * 1024 * 1024,
        "MAX_AGE": 5,
    }

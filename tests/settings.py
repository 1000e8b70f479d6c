"""Django settings for the test-suite; the Redis URL comes from conftest."""

import os
import tempfile

SECRET_KEY = "tests-only"
#: A directory the suite's processes share (conftest sets it before any
#: worker process starts): the file cache and the "files" database.
_SHARED = os.environ.get("DOGPILE_TEST_SHARED_DIR") or tempfile.mkdtemp(prefix="dogpile-")
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_dogpile",
    "tests",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.urls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    # a file, so that closing a connection is observable (:memory: never closes)
    "files": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_SHARED, "db.sqlite3"),
    },
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The suite counts Redis commands exactly: no background publishing of the
# counters unless a test asks for it (tests/ops/test_commands.py).
DOGPILE = {"STATS_INTERVAL": 0}

REDIS_URL = os.environ.get("DOGPILE_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
_FILE_DIR = os.path.join(_SHARED, "filecache")
# the database cache lives in the "files" database, which processes share
DATABASE_ROUTERS = ["tests.settings.CacheRouter"]


class CacheRouter:
    def db_for_read(self, model, **hints):
        return "files" if model._meta.app_label == "django_cache" else None

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, **hints):
        return None


_SENTINEL_OPTIONS = {
    "CLIENT_CLASS": "django_redis.client.SentinelClient",
    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
    "SENTINELS": [("127.0.0.1", int(os.environ.get("DOGPILE_TEST_SENTINEL_PORT", "1")))],
    # a dead primary refuses connections at once on loopback; these bound
    # what a hung one could cost a caller
    "SOCKET_CONNECT_TIMEOUT": 0.5,
    "SOCKET_TIMEOUT": 1,
}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "default"},
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "store"},
    "redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 5},
    },
    "redis_ignore": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "ign",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 5, "IGNORE_EXCEPTIONS": True},
    },
    # the other Redis clients the native lease knows, on the same server
    "redis_django": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
    "valkey": {
        "BACKEND": "django_valkey.cache.ValkeyCache",
        "LOCATION": REDIS_URL.replace("redis://", "valkey://"),
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 5},
    },
    # django-redis's ShardClient over two redis-servers
    "shards": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": [REDIS_URL, os.environ.get("DOGPILE_TEST_REDIS2_URL", "redis://127.0.0.1:2/0")],
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient", "SOCKET_TIMEOUT": 5},
    },
    # django-redis's SentinelClient: the primary is whatever the sentinel
    # says (tests/stores/test_sentinel.py starts primary, replica and sentinel, and
    # sets the port before any worker process imports these settings).
    # Django's own RedisCache is not run under Sentinel: it builds its pool
    # with pool_class.from_url(LOCATION, **OPTIONS), a fixed address, unless
    # OPTIONS name redis-py's SentinelConnectionPool and carry service_name
    # and a live Sentinel object (see tests/stores/test_sentinel.py).
    "sentinel": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://mymaster/0",
        "KEY_PREFIX": "snt",
        "OPTIONS": _SENTINEL_OPTIONS,
    },
    "sentinel_ignore": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://mymaster/0",
        "KEY_PREFIX": "snt-ign",
        "OPTIONS": {**_SENTINEL_OPTIONS, "IGNORE_EXCEPTIONS": True},
    },
    # django-valkey's ClusterValkeyCache on a 6-node Redis Cluster (3
    # primaries, 3 replicas) that conftest starts
    "cluster": {
        "BACKEND": "django_valkey.cluster_cache.cache.ClusterValkeyCache",
        "LOCATION": os.environ.get("DOGPILE_TEST_CLUSTER", "valkey://127.0.0.1:1"),
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 5},
    },
    # a cluster of its own for the failover and reshard tests (they kill and move)
    "cluster_own": {
        "BACKEND": "django_valkey.cluster_cache.cache.ClusterValkeyCache",
        "LOCATION": os.environ.get("DOGPILE_TEST_CLUSTER_OWN", "valkey://127.0.0.1:1"),
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 1},
    },
    "cluster_own_ignore": {
        "BACKEND": "django_valkey.cluster_cache.cache.ClusterValkeyCache",
        "LOCATION": os.environ.get("DOGPILE_TEST_CLUSTER_OWN", "valkey://127.0.0.1:1"),
        "KEY_PREFIX": "ign",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 1, "IGNORE_EXCEPTIONS": True},
    },
    "memcached": {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": os.environ.get("DOGPILE_TEST_MEMCACHED", "127.0.0.1:1"),
    },
    "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": _FILE_DIR},
    # locmem that keeps thousands of keys (the tag load test's 2,000 pages)
    "locmem_big": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "big",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    },
    "dp_locmem": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_redis": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "redis",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_near": {  # Redis with the near cache in front
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "redis",
        "TIMEOUT": 300,
        "KEY_PREFIX": "near",
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "NEAR_CACHE": True},
    },
    "dp_cluster": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "cluster",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_cluster_near": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "cluster",
        "TIMEOUT": 300,
        "KEY_PREFIX": "near",
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "NEAR_CACHE": True},
    },
    "dp_memcached": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "memcached",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_async": {  # native asyncio reads on a small pool (tests/stores/test_native_async.py)
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "redis",
        "TIMEOUT": 300,
        "KEY_PREFIX": "async",
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "ASYNC_POOL": {"MAX_CONNECTIONS": 20, "TIMEOUT": 10}},
    },
    "dp_async_threads": {  # the same, every a* call in a thread
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "redis",
        "TIMEOUT": 300,
        "KEY_PREFIX": "async",
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "ASYNC_POOL": False},
    },
    "dp_redis_ignore": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "redis_ignore",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_forever": {  # TIMEOUT None: values never go stale
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "TIMEOUT": None,
        "KEY_PREFIX": "forever",
    },
    "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "dogpile_cache_table"},
    "dp_db": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "db",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_file": {
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "file",
        "TIMEOUT": 300,
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5},
    },
    "dp_stale": {  # a failed regeneration serves the stale value
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "TIMEOUT": 300,
        "KEY_PREFIX": "stale",
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "SERVE_STALE_ON_ERROR": True},
    },
    "dp_bg": {  # stale values are regenerated in a pool thread
        "BACKEND": "django_dogpile.cache.DogpileCache",
        "LOCATION": "locmem",
        "TIMEOUT": 300,
        "KEY_PREFIX": "bg",
        "OPTIONS": {"GRACE": 600, "LOCK_TIMEOUT": 5, "BACKGROUND": True},
    },
}

#: Every contrib middleware that writes the response after the view.
FULL_STACK = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

"""Django set-up for the tests, and the real servers for the whole session:
a redis-server, a second one (the shards' other half), a memcached and a
6-node Redis Cluster."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.helpers.redis_server import MemcachedServer, RedisClusterServers, RedisServer, required
from tests.helpers.stores import STORES

_server: RedisServer | None = None
_why_not: str | None = None
_others: dict[str, RedisServer | MemcachedServer | RedisClusterServers] = {}
_others_why_not: dict[str, str] = {}


def _start_others() -> None:
    """The second redis-server and memcached (each test that needs one skips
    without it, except under CI or ``./dev test``, where it is a usage error)."""
    for name, server, env, where in [
        ("redis2", RedisServer(), "DOGPILE_TEST_REDIS2_URL", lambda s: s.url),
        ("memcached", MemcachedServer(), "DOGPILE_TEST_MEMCACHED", lambda s: s.location),
        ("cluster", RedisClusterServers(), "DOGPILE_TEST_CLUSTER", lambda s: s.location),
    ]:
        try:
            server.start()
        except RuntimeError as exc:
            _others_why_not[name] = str(exc)
            if required():
                raise pytest.UsageError(f"{name} is required here (CI) but: {exc}") from None
            continue
        _others[name] = server
        os.environ[env] = where(server)


def pytest_configure(config: pytest.Config) -> None:
    global _server, _why_not
    try:
        _server = RedisServer()
        _server.start()
        os.environ["DOGPILE_TEST_REDIS_URL"] = _server.url
    except RuntimeError as exc:
        _server, _why_not = None, str(exc)
        if required():
            raise pytest.UsageError(f"Redis is required here (CI) but: {exc}") from None
    _start_others()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if "DOGPILE_TEST_SHARED_DIR" not in os.environ:
        os.environ["DOGPILE_TEST_SHARED_DIR"] = tempfile.mkdtemp(prefix="dogpile-")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", database="files", verbosity=0, run_syncdb=True)
    call_command("createcachetable", database="files", verbosity=0)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.cleanup()
    for server in _others.values():
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's redis-server; skips (never in CI) when there is none."""
    if _server is None:
        pytest.skip(f"no redis-server: {_why_not}")
    return _server


@pytest.fixture(scope="session")
def memcached_server() -> MemcachedServer:
    """The session's memcached; skips (never in CI) when there is none."""
    if "memcached" not in _others:
        pytest.skip(f"no memcached: {_others_why_not.get('memcached')}")
    return _others["memcached"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def redis_cluster() -> RedisClusterServers:
    """The session's Redis Cluster (6 nodes); skips (never in CI) without one."""
    if "cluster" not in _others:
        pytest.skip(f"no Redis Cluster: {_others_why_not.get('cluster')}")
    return _others["cluster"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def second_redis() -> RedisServer:
    """A second redis-server (the other shard); skips (never in CI) without one."""
    if "redis2" not in _others:
        pytest.skip(f"no second redis-server: {_others_why_not.get('redis2')}")
    return _others["redis2"]  # type: ignore[return-value]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for marker, fixture in [
            ("redis", "redis_server"),
            ("memcached", "memcached_server"),
            ("shards", "second_redis"),
            ("cluster", "redis_cluster"),
        ]:
            if marker in item.keywords and fixture not in names:
                item.fixturenames.append(fixture)  # type: ignore[attr-defined]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """The alias of each store of :data:`tests.helpers.stores.STORES` in turn."""
    return str(request.param)

"""Django set-up for the tests and a real redis-server for the whole session."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.redis_server import RedisServer, required

_server: RedisServer | None = None
_why_not: str | None = None


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


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's redis-server; skips (never in CI) when there is none."""
    if _server is None:
        pytest.skip(f"no redis-server: {_why_not}")
    return _server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "redis" in item.keywords and "redis_server" not in getattr(item, "fixturenames", ()):
            item.fixturenames.append("redis_server")  # type: ignore[attr-defined]

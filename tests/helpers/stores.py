"""The one table of the stores the suite runs over: each ``CACHES`` alias of
``tests/settings.py`` that holds data, with the marks that say which server
it needs.  Tests pick from it by name (:func:`stores`); the ``store``
fixture (``tests/conftest.py``) runs a test over every one."""

from __future__ import annotations

from typing import Any

import pytest

#: django-redis 7's ShardClient warns about its own internal calls
SHARD_WARNING = pytest.mark.filterwarnings(
    "ignore:.* on sharded client should not specify client:UserWarning"
)

_MARKS: dict[str, list[Any]] = {
    "locmem": [],
    "file": [],
    "db": [],
    "redis": [pytest.mark.redis],
    "redis_django": [pytest.mark.redis],
    "valkey": [pytest.mark.redis],
    "shards": [pytest.mark.shards, SHARD_WARNING],
    "memcached": [pytest.mark.memcached],
    "cluster": [pytest.mark.cluster],
}

#: every store, in the order the suite runs them
STORES = [pytest.param(alias, marks=marks, id=alias) for alias, marks in _MARKS.items()]


def stores(*aliases: str) -> list[Any]:
    """The rows of :data:`STORES` for ``aliases`` (their marks with them)."""
    unknown = set(aliases) - set(_MARKS)
    if unknown:
        raise ValueError(f"not a store of tests/settings.py: {sorted(unknown)}")
    return [pytest.param(alias, marks=_MARKS[alias], id=alias) for alias in aliases]

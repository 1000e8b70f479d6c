"""Fixtures of the store tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def server(request, store):
    """The servers of the parametrized ``store``: the suite's redis-server,
    or its Redis Cluster for ``"cluster"``."""
    return request.getfixturevalue("redis_cluster" if store == "cluster" else "redis_server")

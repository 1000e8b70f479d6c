"""``REGENERATION_BUDGET``: at most K regenerations at once over a store.

A caller with a stale value and no free slot serves it (``UPDATING``); a
caller with nothing to serve waits for a slot.  The slots belong to the
store, not to an alias: two aliases (two tenants) over one store share
them.  The mass-invalidation load over processes is tests/engine/test_tag_load.py.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.helpers.procs import make_cache
from tests.helpers.stores import stores


def budgeted(store, size, prefix=None, **options):
    prefix = prefix or f"budget-{uuid.uuid4().hex[:8]}"
    return make_cache(store, prefix, timeout=300, LOCK_TIMEOUT=5, REGENERATION_BUDGET=size, **options)


class Held:
    """A creator that blocks until released, noting when it ran."""

    def __init__(self, value):
        self.value = value
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.ended_at = None

    def __call__(self):
        self.calls += 1
        self.started.set()
        assert self.release.wait(10)
        self.ended_at = time.monotonic()
        return self.value


@pytest.mark.parametrize("store", stores("locmem", "redis", "memcached"))
def test_over_budget_a_stale_value_is_served_and_not_regenerated(store):
    cache = budgeted(store, 2)
    for i in range(4):
        cache.get_or_set(f"k{i}", f"old{i}", tags="t")
    cache.invalidate_tags("t")
    held = [Held(f"new{i}") for i in range(4)]
    results = {}

    def call(i):
        results[i] = cache.get_or_set_status(f"k{i}", held[i], tags="t")

    first = [threading.Thread(target=call, args=(i,)) for i in (0, 1)]
    for t in first:
        t.start()
    assert held[0].started.wait(5) and held[1].started.wait(5)
    # both slots taken: the next two serve their stale values at once
    call(2)
    call(3)
    assert results[2] == ("old2", "UPDATING") and results[3] == ("old3", "UPDATING")
    assert held[2].calls == held[3].calls == 0
    for h in held[:2]:
        h.release.set()
    for t in first:
        t.join(10)
    assert results[0] == ("new0", "EXPIRED") and results[1] == ("new1", "EXPIRED")
    # slots free again: the next caller of a stale key regenerates it
    held[2].release.set()
    assert cache.get_or_set_status("k2", held[2], tags="t") == ("new2", "EXPIRED")


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_a_caller_with_nothing_to_serve_waits_for_a_slot(store):
    cache = budgeted(store, 1)
    holder = Held("a")
    t = threading.Thread(target=lambda: cache.get_or_set("a", holder))
    t.start()
    assert holder.started.wait(5)
    threading.Timer(0.3, holder.release.set).start()
    began = []
    assert cache.get_or_set("b", lambda: began.append(time.monotonic()) or "b") == "b"
    t.join(10)
    assert began[0] >= holder.ended_at  # it ran only once the slot was free


@pytest.mark.parametrize("store", stores("locmem", "redis"))
def test_aliases_over_one_store_share_its_budget(store):
    """Two tenants (KEY_PREFIX here) over one store: one database behind
    them, one budget."""
    tenant_a = budgeted(store, 1, prefix=f"a-{uuid.uuid4().hex[:6]}")
    tenant_b = budgeted(store, 1, prefix=f"b-{uuid.uuid4().hex[:6]}")
    tenant_b.get_or_set("k", "old", tags="t")
    tenant_b.invalidate_tags("t")
    holder = Held("a")
    t = threading.Thread(target=lambda: tenant_a.get_or_set("k", holder))
    t.start()
    assert holder.started.wait(5)
    try:
        assert tenant_b.get_or_set_status("k", lambda: "new", tags="t") == ("old", "UPDATING")
    finally:
        holder.release.set()
        t.join(10)
    time.sleep(0.05)  # past FULL_FOR
    assert tenant_b.get_or_set_status("k", lambda: "new", tags="t") == ("new", "EXPIRED")


def test_bad_budget_is_a_clear_error():
    from django.core.exceptions import ImproperlyConfigured

    for bad in (0, -1, 1.5, "four", True):  # "4" is 4, as TIMEOUT from the environment
        with pytest.raises(ImproperlyConfigured, match="REGENERATION_BUDGET"):
            budgeted("locmem", bad).get_or_set("k", "v")

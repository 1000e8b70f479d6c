"""The dogpile core, against dogpile.core 0.4.1's behaviour, with real threads."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time

import pytest

from django_dogpile import core as dogpile_core
from django_dogpile.core import (
    Dogpile,
    Lock,
    LockError,
    NameRegistry,
    NeedRegenerationException,
    ReadWriteMutex,
    SyncReaderDogpile,
)


class RecordingMutex:
    """A real threading.Lock that records how it is called."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple] = []

    def acquire(self, *args, **kw):
        self.calls.append(("acquire", args, kw))
        return self.lock.acquire(*args, **kw)

    def release(self):
        self.calls.append(("release", (), {}))
        self.lock.release()


class Store:
    """A value with its creation time, as a cache would keep it."""

    def __init__(self, value=None, created=None):
        self.value = value
        self.created = created
        self.reads = 0
        self.creates = 0

    def value_and_created(self):
        self.reads += 1
        if self.created is None:
            raise NeedRegenerationException()
        return self.value, self.created

    def creator(self, value="new", delay=0.0):
        def create():
            self.creates += 1
            time.sleep(delay)
            self.value, self.created = value, time.time()
            return self.value, self.created

        return create


def run_threads(n, target):
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = target()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_public_names():
    assert set(dogpile_core.__all__) >= {
        "Lock",
        "NeedRegenerationException",
        "ReadWriteMutex",
        "NameRegistry",
        "Dogpile",
        "SyncReaderDogpile",
    }
    import django_dogpile

    for name in dogpile_core.__all__:
        assert getattr(django_dogpile, name) is getattr(dogpile_core, name)


def test_module_paths_mirror_dogpile_core():
    from django_dogpile.core.dogpile import Lock as L
    from django_dogpile.core.legacy import Dogpile as D
    from django_dogpile.core.nameregistry import NameRegistry as N
    from django_dogpile.core.readwrite_lock import ReadWriteMutex as R

    assert (L, D, N, R) == (Lock, Dogpile, NameRegistry, ReadWriteMutex)


def test_import_needs_no_django():
    code = (
        "import os, sys; os.environ.pop('DJANGO_SETTINGS_MODULE', None);"
        "import django_dogpile, django_dogpile.core;"
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules),"
        " sorted(m for m in sys.modules if m.startswith('django'));"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --- Lock -----------------------------------------------------------------


def test_fresh_value_leaves_mutex_untouched():
    store = Store("old", time.time())
    mutex = RecordingMutex()
    with Lock(mutex, store.creator(), store.value_and_created, 10) as value:
        assert value == "old"
    assert mutex.calls == []
    assert store.reads == 1 and store.creates == 0


def test_expired_value_with_free_mutex_regenerates_reading_once():
    store = Store("old", time.time() - 20)
    mutex = RecordingMutex()
    with Lock(mutex, store.creator("new"), store.value_and_created, 10) as value:
        assert value == "new"
    assert store.creates == 1
    # the refinement over dogpile.core 0.4.1: no second read after acquire(False)
    assert store.reads == 1
    assert mutex.calls == [("acquire", (False,), {}), ("release", (), {})]
    assert not mutex.lock.locked()


def test_expired_value_with_busy_mutex_returns_stale_at_once():
    store = Store("old", time.time() - 20)
    mutex = RecordingMutex()
    mutex.lock.acquire()
    try:
        start = time.monotonic()
        with Lock(mutex, store.creator(), store.value_and_created, 10) as value:
            assert value == "old"
        assert time.monotonic() - start < 0.5
    finally:
        mutex.lock.release()
    assert store.creates == 0
    assert mutex.calls == [("acquire", (False,), {})]


def test_no_value_blocks_and_rereads_after_acquire():
    store = Store()
    mutex = RecordingMutex()
    with Lock(mutex, store.creator("v"), store.value_and_created, 10) as value:
        assert value == "v"
    assert mutex.calls == [("acquire", (), {}), ("release", (), {})]
    assert store.reads == 2  # once before, once after the blocking acquire


def test_zero_or_negative_creation_time_means_no_value():
    for created in (0, -1):
        store = Store("ghost", created)
        with Lock(threading.Lock(), store.creator("v"), store.value_and_created, None) as v:
            assert v == "v"


def test_expiretime_none_never_expires():
    store = Store("old", 1.0)  # created in 1970
    with Lock(threading.Lock(), store.creator(), store.value_and_created, None) as v:
        assert v == "old"
    assert store.creates == 0


def test_value_created_while_waiting_is_returned_without_creator():
    store = Store()
    mutex = threading.Lock()
    mutex.acquire()
    result = []

    def caller():
        with Lock(mutex, store.creator("mine"), store.value_and_created, 10) as v:
            result.append(v)

    t = threading.Thread(target=caller)
    t.start()
    time.sleep(0.1)
    store.value, store.created = "theirs", time.time()
    mutex.release()
    t.join(5)
    assert result == ["theirs"]
    assert store.creates == 0


def test_creator_raising_releases_mutex_and_propagates():
    store = Store("old", time.time() - 20)
    mutex = threading.Lock()

    def boom():
        raise ZeroDivisionError("creator failed")

    with pytest.raises(ZeroDivisionError):
        with Lock(mutex, boom, store.value_and_created, 10):
            pass
    assert not mutex.locked()
    with pytest.raises(ZeroDivisionError):
        with Lock(mutex, boom, Store().value_and_created, 10):
            pass
    assert not mutex.locked()


def test_async_creator_gets_mutex_and_stale_is_returned():
    store = Store("old", time.time() - 20)
    mutex = threading.Lock()
    done = threading.Event()
    seen = []

    def async_creator(m):
        seen.append(m)

        def work():
            try:
                store.creator("new", delay=0.2)()
            finally:
                m.release()
                done.set()

        threading.Thread(target=work).start()

    start = time.monotonic()
    with Lock(mutex, store.creator("sync"), store.value_and_created, 10, async_creator) as v:
        assert v == "old"
    assert time.monotonic() - start < 0.15
    assert seen == [mutex]
    assert mutex.locked()  # now owned by the async runner
    assert done.wait(5)
    assert not mutex.locked()
    assert store.value == "new"


def test_async_creator_not_used_without_a_value():
    store = Store()
    calls = []
    with Lock(threading.Lock(), store.creator("v"), store.value_and_created, 10, calls.append) as v:
        assert v == "v"
    assert calls == []


@pytest.mark.slow
def test_threads_on_expired_value_one_creator_no_waiting():
    store = Store("old", time.time() - 20)
    mutex = threading.Lock()
    create = store.creator("new", delay=0.5)
    concurrent = []
    active = [0]
    guard = threading.Lock()

    def counted_create():
        with guard:
            active[0] += 1
            concurrent.append(active[0])
        try:
            return create()
        finally:
            with guard:
                active[0] -= 1

    def caller():
        start = time.monotonic()
        with Lock(mutex, counted_create, store.value_and_created, 10) as v:
            return v, time.monotonic() - start

    results = run_threads(20, caller)
    assert store.creates == 1
    assert max(concurrent) == 1
    stale = [r for r in results if r[0] == "old"]
    assert len(stale) == 19
    assert all(elapsed < 0.25 for _, elapsed in stale)
    assert [r[0] for r in results].count("new") == 1


@pytest.mark.slow
def test_threads_with_no_value_one_creator_all_get_it():
    store = Store()
    mutex = threading.Lock()
    results = run_threads(
        20, lambda: Lock(mutex, store.creator("first", 0.2), store.value_and_created, 10).__enter__()
    )
    assert store.creates == 1
    assert results == ["first"] * 20


# --- NameRegistry ---------------------------------------------------------


class Thing:
    def __init__(self, identifier, *args, **kw):
        self.identifier, self.args, self.kw = identifier, args, kw


def test_nameregistry_identity_and_arguments():
    reg = NameRegistry(Thing)
    a = reg.get("a", 1, x=2)
    assert reg.get("a") is a
    assert (a.identifier, a.args, a.kw) == ("a", (1,), {"x": 2})
    assert reg.get("b") is not a


def test_nameregistry_creates_once_under_race():
    created = []

    def slow(identifier):
        created.append(identifier)
        time.sleep(0.05)
        return Thing(identifier)

    reg = NameRegistry(slow)
    results = run_threads(16, lambda: reg.get("k"))
    assert len(created) == 1
    assert all(r is results[0] for r in results)


def test_nameregistry_drops_unreferenced_values():
    reg = NameRegistry(Thing)
    first = reg.get("k")
    first_id = id(first)
    marker = []
    first.marker = marker
    del first
    gc.collect()
    assert "k" not in reg._values
    again = reg.get("k")
    assert not hasattr(again, "marker")
    del first_id


# --- ReadWriteMutex -------------------------------------------------------


def test_readers_run_together_writer_alone():
    m = ReadWriteMutex()
    inside = []
    peak = {"readers": 0, "with_writer": False}
    guard = threading.Lock()

    def reader():
        m.acquire_read_lock()
        with guard:
            inside.append("r")
            peak["readers"] = max(peak["readers"], inside.count("r"))
            if "w" in inside:
                peak["with_writer"] = True
        time.sleep(0.05)
        with guard:
            inside.remove("r")
        m.release_read_lock()

    def writer():
        m.acquire_write_lock()
        with guard:
            if inside:
                peak["with_writer"] = True
            inside.append("w")
        time.sleep(0.05)
        with guard:
            inside.remove("w")
        m.release_write_lock()

    targets = [reader] * 8 + [writer] * 3
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak["readers"] > 1
    assert not peak["with_writer"]


def test_wait_false_never_blocks():
    m = ReadWriteMutex()
    assert m.acquire_read_lock(wait=False) is True
    start = time.monotonic()
    assert m.acquire_write_lock(wait=False) is False
    assert time.monotonic() - start < 0.1
    assert m.acquire_read_lock(wait=False) is True  # readers share
    m.release_read_lock()
    m.release_read_lock()
    assert m.acquire_write_lock(wait=False) is True
    assert m.acquire_read_lock(wait=False) is False
    assert m.acquire_write_lock(wait=False) is False
    m.release_write_lock()
    assert m.acquire_read_lock(wait=False) is True
    m.release_read_lock()


def test_waiting_writer_holds_back_new_readers():
    m = ReadWriteMutex()
    m.acquire_read_lock()
    got_write = threading.Event()

    def writer():
        m.acquire_write_lock()
        got_write.set()
        time.sleep(0.05)
        m.release_write_lock()

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.1)  # the writer now waits for our read lock
    assert m.acquire_read_lock(wait=False) is False
    assert not got_write.is_set()
    m.release_read_lock()
    assert got_write.wait(5)
    t.join(5)
    assert m.acquire_read_lock(wait=False) is True
    m.release_read_lock()


def test_misuse_raises_lockerror_and_leaves_mutex_intact():
    m = ReadWriteMutex()
    with pytest.raises(LockError):
        m.release_read_lock()
    assert m.acquire_write_lock(wait=False) is True  # still usable, not negative
    errors = []

    def foreign_release():
        try:
            m.release_write_lock()
        except LockError as exc:
            errors.append(exc)

    t = threading.Thread(target=foreign_release)
    t.start()
    t.join(5)
    assert len(errors) == 1
    assert m.acquire_read_lock(wait=False) is False  # we still hold it
    m.release_write_lock()
    assert m.acquire_read_lock(wait=False) is True
    m.release_read_lock()
    with pytest.raises(LockError):
        m.release_read_lock()


# --- legacy Dogpile -------------------------------------------------------


def test_dogpile_defaults():
    d = Dogpile(5)
    assert d.createdtime == -1
    assert not d.has_value and d.is_expired
    d2 = Dogpile(5, init=True)
    assert d2.has_value and not d2.is_expired
    assert Dogpile(None, init=True).is_expired is False


def test_dogpile_creator_only_and_value_fn():
    d = Dogpile(1)
    calls = []

    def creator():
        calls.append(1)
        return f"v{len(calls)}"

    with d.acquire(creator) as v:
        assert v == "v1"  # the creator's value the first time
    with d.acquire(creator) as v:
        assert v is None  # no value_fn: a fresh entry yields None
    assert len(calls) == 1 and d.has_value

    store = {}

    def make():
        store["v"] = "made"
        return "made"

    d2 = Dogpile(0.2)
    with d2.acquire(make, value_fn=lambda: store.get("v")) as v:
        assert v == "made"
    store["v"] = "stored"
    with d2.acquire(make, value_fn=lambda: store.get("v")) as v:
        assert v == "stored"
    time.sleep(0.3)
    assert d2.is_expired
    with d2.acquire(make, value_fn=lambda: store.get("v")) as v:
        assert v == "made"


def test_dogpile_value_and_created_fn():
    d = Dogpile(10)
    store = Store()
    with d.acquire(store.creator("x"), value_and_created_fn=store.value_and_created) as v:
        assert v == "x"
    assert d.createdtime > 0
    with d.acquire(store.creator("y"), value_and_created_fn=store.value_and_created) as v:
        assert v == "x"
    assert store.creates == 1


def test_dogpile_custom_lock_used():
    mutex = RecordingMutex()
    d = Dogpile(10, lock=mutex)
    with d.acquire(lambda: 1):
        pass
    assert mutex.calls[0] == ("acquire", (), {})


@pytest.mark.slow
def test_dogpile_threads_one_creator():
    d = Dogpile(10)
    calls = []

    def creator():
        calls.append(1)
        time.sleep(0.2)
        return "v"

    def caller():
        with d.acquire(creator, value_fn=lambda: "v") as v:
            return v

    assert run_threads(10, caller) == ["v"] * 10
    assert len(calls) == 1


def test_syncreader_writer_excludes_readers():
    d = SyncReaderDogpile(10)
    with d.acquire(lambda: "v", value_fn=lambda: "v") as v:
        assert v == "v"
    entered = threading.Event()

    def reader():
        with d.acquire(lambda: "v", value_fn=lambda: "v"):
            entered.set()

    with d.acquire_write_lock():
        t = threading.Thread(target=reader)
        t.start()
        assert not entered.wait(0.2)
    assert entered.wait(5)
    t.join(5)

"""Django's file cache: its lease is a lease file under ``flock``.

``FileBasedCache.add()`` is ``has_key()`` then ``set()``, not atomic: the
lease is a file of its own, taken under ``flock``, so it holds for every
process of one host (hosts sharing the directory over NFS cannot rely on
``flock``: the deploy check W004 says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from django_dogpile.stores.base import AddLease

__all__ = ["FileLease", "guarded_add"]


@contextlib.contextmanager
def _guarded(guard: str) -> Iterator[None]:
    """An exclusive ``flock`` of the file ``guard`` (created if missing)."""
    os.makedirs(os.path.dirname(guard), exist_ok=True)
    fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def guarded_add(store: Any, key: str, value: Any, timeout: float | None) -> bool:
    """``store.add()`` made atomic between the processes of one host that add
    through here: ``has_key()`` then ``set()`` under the lease's guard."""
    with _guarded(os.path.join(store._dir, ".dogpile-guard")):
        if store.has_key(key):
            return False
        store.set(key, value, timeout=timeout)
        return True


class FileLease(AddLease):
    """A lease file beside the file cache's own files, changed under ``flock``.

    ``FileBasedCache.add()`` is ``has_key()`` then ``set()``: two processes
    both "add" the same lock.  Here each check-and-write of a lease file
    happens under an exclusive ``flock`` of one guard file per cache
    directory, held for microseconds and dropped by the kernel if the
    process dies; the lease file holds the owner's token and the wall-clock
    time its lease runs out.  One host only, as the file cache is.
    """

    __slots__ = ("path", "guard")

    def __init__(self, store: Any, lock_key: str, record_key: str, lock_timeout: float) -> None:
        super().__init__(store, lock_key, record_key, lock_timeout)
        directory = store._dir
        name = hashlib.md5(store.make_key(lock_key).encode(), usedforsecurity=False).hexdigest()
        self.path = os.path.join(directory, name + ".dogpile-lease")
        self.guard = os.path.join(directory, ".dogpile-guard")

    def _guarded(self) -> contextlib.AbstractContextManager[None]:
        return _guarded(self.guard)

    def _read(self) -> tuple[str, float] | None:
        try:
            with open(self.path) as f:
                token, until = f.read().split()
            return token, float(until)
        except (OSError, ValueError):
            return None

    def _take(self) -> bool:
        with self._guarded():
            current = self._read()
            if current is not None and current[1] > time.time():
                return False
            with open(self.path, "w") as f:
                f.write(f"{self.token} {time.time() + self.timeout!r}")
            return True

    def holds(self) -> bool:
        with self._guarded():
            current = self._read()
        return current is not None and current[0] == self.token and current[1] > time.time()

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        with self._guarded():  # no other lease change while we check and write
            current = self._read()
            if current is not None and current[0] != self.token:
                return None  # another holder's lease, running or run out
            if not unchanged():
                return None
            self.cache.set(self.record_key, record, timeout=timeout)
            return True

    def _drop(self) -> bool:
        with self._guarded():
            current = self._read()
            if current is not None and current[0] == self.token:
                os.unlink(self.path)
                return current[1] > time.time()
        return False

"""A readers-writer mutex for threads in one process (pure Python)."""

from __future__ import annotations

import logging
import threading

__all__ = ["LockError", "ReadWriteMutex"]

log = logging.getLogger(__name__)


class LockError(Exception):
    """A lock was released by a caller that does not hold it."""


class ReadWriteMutex:
    """A mutex that admits many readers at once, or a single writer.

    It prefers writers: once a writer is waiting, new readers wait behind
    it, so a steady stream of readers cannot starve a writer.

    Every ``acquire_*`` takes ``wait``; with ``wait=False`` it never blocks
    and returns ``False`` when the lock is not available (``True`` when it
    was taken).  Misuse -- releasing a write lock from a thread that does
    not hold it, or more read locks than were taken -- raises
    :class:`LockError` and leaves the mutex as it was.
    """

    def __init__(self) -> None:
        # number of readers inside
        self.async_ = 0
        # the thread that holds, or is waiting for, the write lock
        self.current_sync_operation: threading.Thread | None = None
        self.condition = threading.Condition(threading.Lock())

    def acquire_read_lock(self, wait: bool = True) -> bool | None:
        """Acquire the read lock; return ``False`` if ``wait`` is false and
        a writer holds or awaits the lock."""
        with self.condition:
            if wait:
                while self.current_sync_operation is not None:
                    self.condition.wait()
            elif self.current_sync_operation is not None:
                return False
            self.async_ += 1
            log.debug("%s acquired read lock", self)
        return None if wait else True

    def release_read_lock(self) -> None:
        """Release a read lock taken by :meth:`acquire_read_lock`."""
        with self.condition:
            if self.async_ <= 0:
                raise LockError("Synchronizer error - too many release_read_locks called")
            self.async_ -= 1
            if self.async_ == 0 and self.current_sync_operation is not None:
                # the last reader out wakes the waiting writer
                self.condition.notify_all()
            log.debug("%s released read lock", self)

    def acquire_write_lock(self, wait: bool = True) -> bool | None:
        """Acquire the write lock; return ``False`` if ``wait`` is false and
        any reader or writer is inside."""
        me = threading.current_thread()
        with self.condition:
            if wait:
                while self.current_sync_operation is not None:
                    self.condition.wait()
            elif self.current_sync_operation is not None:
                return False
            # From here on new readers wait behind us.
            self.current_sync_operation = me
            if self.async_ > 0:
                if not wait:
                    self.current_sync_operation = None
                    self.condition.notify_all()
                    return False
                while self.async_ > 0:
                    self.condition.wait()
            log.debug("%s acquired write lock", self)
        return None if wait else True

    def release_write_lock(self) -> None:
        """Release the write lock held by the calling thread."""
        with self.condition:
            if self.current_sync_operation is not threading.current_thread():
                raise LockError("Synchronizer error - current thread doesn't have the write lock")
            self.current_sync_operation = None
            self.condition.notify_all()
            log.debug("%s released write lock", self)

"""A project's own DogpileCache subclass (e.g. to add a method)."""

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache

from django_dogpile.cache import DogpileCache


class SiteCache(DogpileCache):
    """DogpileCache with a site-specific helper."""

    def warm(self, key, value):
        return self.get_or_set(key, value)


class TenantLocMem(LocMemCache):
    """A store that puts the tenant into its keys by overriding make_key
    (rather than through KEY_FUNCTION)."""

    def make_key(self, key, version=None):
        from tests.helpers.tenants import tenant

        return f"{tenant.get()}|{super().make_key(key, version)}"


class NotALockCache(BaseCache):
    """A store django-dogpile does not know, whose ``add()`` always
    succeeds: its lease (``add()``) is no lock.  The store contract must
    fail over it."""

    def __init__(self, location, params):
        super().__init__(params)
        self._data = LocMemCache(f"not-a-lock-{location}", {"TIMEOUT": None})

    def add(self, key, value, timeout=None, version=None):
        self._data.set(key, value, timeout, version)
        return True

    def get(self, key, default=None, version=None):
        return self._data.get(key, default, version)

    def set(self, key, value, timeout=None, version=None):
        self._data.set(key, value, timeout, version)

    def touch(self, key, timeout=None, version=None):
        return self._data.touch(key, timeout, version)

    def delete(self, key, version=None):
        return self._data.delete(key, version)

    def clear(self):
        self._data.clear()

"""A project's own DogpileCache subclass (e.g. to add a method)."""

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
        from tests.tenants import tenant

        return f"{tenant.get()}|{super().make_key(key, version)}"

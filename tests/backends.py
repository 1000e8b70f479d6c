"""A project's own DogpileCache subclass (e.g. to add a method)."""

from django_dogpile.cache import DogpileCache


class SiteCache(DogpileCache):
    """DogpileCache with a site-specific helper."""

    def warm(self, key, value):
        return self.get_or_set(key, value)

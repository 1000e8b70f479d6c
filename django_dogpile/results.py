"""Results that decide their own fate (see :mod:`django_dogpile.engine.results`):

.. code-block:: python

    from django_dogpile.results import CacheResult, dont_store, expires_in

    @cached(300)
    def offers(shop_id):
        found = partner_api.offers(shop_id)
        if not found:
            return CacheResult([], timeout=10)  # an empty answer: worth 10 s
        return found

    @dogpile_cache_page(300)
    def prices(request):
        try:
            rows = partner_api.prices()
        except PartnerDown:
            dont_store()  # serve this error page, keep nothing
            return render(request, "prices_down.html", status=200)
        return render(request, "prices.html", {"rows": rows})
"""

from django_dogpile.engine.results import CacheResult, dont_store, expires_in

__all__ = ["CacheResult", "dont_store", "expires_in"]

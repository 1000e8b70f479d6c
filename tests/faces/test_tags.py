"""Tags on every face: pages, fragments and ``cached()``; bubbling up to the
page; the CDN's headers; ``invalidate_on_change`` after the commit; the
``dogpile invalidate --tag`` command."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connections, transaction
from django.template import Context, Template, TemplateSyntaxError
from django.test import AsyncClient, Client, override_settings

from django_dogpile.decorators import cached
from django_dogpile.invalidation import invalidate_on_change, invalidate_tags
from tests.helpers import tag_urls
from tests.models import Category, Label, Product

STATUS = "X-Dogpile-Cache"


@pytest.fixture
def shop():
    caches["dp_locmem"].clear()
    caches["dp_redis"].clear()
    tag_urls.RUNS.clear()
    with override_settings(ROOT_URLCONF="tests.helpers.tag_urls"):
        yield Client()


def test_tags_of_a_fragment_and_a_cached_call_bubble_up_to_the_page(shop):
    first = shop.get("/shelf/")
    assert first[STATUS] == "MISS" and b"shelf 1 | sidebar 1 | price 10" in first.content
    assert shop.get("/shelf/")[STATUS] == "HIT"
    # the page declared no tags: it carries those of what it shows
    tag_urls.PRICES[1] = 12
    invalidate_tags("product:1", using="dp_locmem")
    again = shop.get("/shelf/")
    assert again[STATUS] == "EXPIRED" and b"shelf 2 | sidebar 1 | price 12" in again.content
    assert shop.get("/shelf/")[STATUS] == "HIT"
    caches["dp_locmem"].invalidate_tags("menu")
    menu = shop.get("/shelf/")
    assert menu[STATUS] == "EXPIRED" and b"shelf 3 | sidebar 2 | price 12" in menu.content
    caches["dp_locmem"].invalidate_tags("unrelated")
    assert shop.get("/shelf/")[STATUS] == "HIT"
    assert tag_urls.RUNS == {"shelf": 3, "sidebar": 2, "price": 2}


def test_bubbling_through_the_async_page_path(shop):
    async def scenario():
        client = AsyncClient()
        first = await client.get("/shelf/")
        await caches["dp_locmem"].ainvalidate_tags("sidebar")
        second = await client.get("/shelf/")
        return first[STATUS], second[STATUS], (await client.get("/shelf/"))[STATUS]

    assert asyncio.run(scenario()) == ("MISS", "EXPIRED", "HIT")
    assert tag_urls.RUNS["shelf"] == 2


def test_the_cdn_headers_list_every_tag_and_the_grace(shop):
    response = shop.get("/cdn/")
    assert sorted(response["Surrogate-Key"].split()) == ["menu", "product:1", "shop", "sidebar"]
    assert sorted(response["Cache-Tag"].split(",")) == ["menu", "product:1", "shop", "sidebar"]
    control = response["Cache-Control"]
    assert (
        "max-age=300" in control
        and "stale-while-revalidate=600" in control
        and "stale-if-error=600" in control
    )
    hit = shop.get("/cdn/")
    assert hit[STATUS] == "HIT" and hit["Surrogate-Key"] == response["Surrogate-Key"]
    # off by default
    assert "Surrogate-Key" not in shop.get("/shelf/")


def test_a_tag_no_header_can_carry_is_left_out_of_the_cdn_headers_only(shop):
    """A space, a comma, a newline or non-ASCII would split a tag or break
    the header: such tags are not listed (never a crash), and are still
    invalidated here."""
    response = shop.get("/cdn-odd/")
    assert response.status_code == 200
    assert sorted(response["Surrogate-Key"].split()) == ["menu", "product:1", "shop", "sidebar"]
    assert sorted(response["Cache-Tag"].split(",")) == ["menu", "product:1", "shop", "sidebar"]
    for tag in ("a b", "x,y", "new\nline", "café"):
        assert shop.get("/cdn-odd/")[STATUS] == "HIT"
        invalidate_tags(tag)
        assert shop.get("/cdn-odd/")[STATUS] == "EXPIRED"


@pytest.mark.redis
def test_a_page_tagged_by_its_view_arguments(shop):
    for slug in ("shoes", "hats"):
        assert shop.get(f"/c/{slug}/")[STATUS] == "MISS"
    assert invalidate_tags("category:shoes") == 1  # every DogpileCache alias
    shoes = shop.get("/c/shoes/")
    assert shoes[STATUS] == "EXPIRED" and shoes.content == b"shoes 2"
    assert shop.get("/c/hats/")[STATUS] == "HIT"


def test_cached_takes_a_list_or_a_callable_of_the_arguments():
    caches["dp_locmem"].clear()
    runs = []

    @cached(300, cache="dp_locmem", tags=["prices"])
    def price(pk):
        runs.append(pk)
        return pk * 10

    @cached(300, cache="dp_locmem", tags=lambda pk, currency="EUR": [f"product:{pk}", currency])
    def shown(pk, currency="EUR"):
        runs.append((pk, currency))
        return f"{pk} {currency}"

    price(1), price(2), shown(1), shown(2, "USD")
    caches["dp_locmem"].invalidate_tags("product:2")
    price(1), price(2), shown(1), shown(2, "USD")
    caches["dp_locmem"].invalidate_tags("prices")
    price(1)
    assert runs == [1, 2, (1, "EUR"), (2, "USD"), (2, "USD"), 1]
    with pytest.raises(TypeError, match="tag"):
        cached(300, cache="dp_locmem", tags=[3])(lambda: 1)


def render(source, **context):
    return Template("{% load dogpile %}" + source).render(Context(context))


def test_the_fragment_tag_takes_tags_and_using_in_either_order():
    caches["dp_locmem"].clear()
    tpl = '{% dogpile_cache 300 "f" x tags=t using="dp_locmem" %}{{ n }}{% enddogpile_cache %}'
    assert render(tpl, x=1, t="one", n=1) == "1"
    assert render(tpl, x=1, t="one", n=2) == "1"
    caches["dp_locmem"].invalidate_tags("one")
    assert render(tpl, x=1, t="one", n=3) == "3"
    other = '{% dogpile_cache 300 "g" using="dp_locmem" tags="a b" %}{{ n }}{% enddogpile_cache %}'
    assert render(other, n=1) == "1"
    caches["dp_locmem"].invalidate_tags("a b")  # one tag (a string is one tag)
    assert render(other, n=2) == "2"
    with pytest.raises(TemplateSyntaxError, match="tag"):
        render('{% dogpile_cache 300 "h" tags=bad %}x{% enddogpile_cache %}', bad=42)
    with pytest.raises(TemplateSyntaxError, match="twice"):
        render('{% dogpile_cache 300 "h" tags=a tags=b %}x{% enddogpile_cache %}')
    with pytest.raises(TemplateSyntaxError, match="before tags="):
        render("{% dogpile_cache 300 tags=a %}x{% enddogpile_cache %}")


@pytest.fixture
def db_products():
    with connections["files"].cursor():
        pass
    Product.objects.using("files").all().delete()
    caches["dp_locmem"].clear()
    yield
    for conn in connections.all():
        conn.close()


def shown_price(pk):
    """What a request renders: the product's price, through the cache."""
    return caches["dp_locmem"].get_or_set(
        f"price:{pk}", lambda: Product.objects.using("files").get(pk=pk).price, tags=[f"product:{pk}"]
    )


def test_a_change_is_invalidated_after_its_transaction_commits(db_products):
    invalidate_on_change(Product, tags=lambda p: [f"product:{p.pk}"], using="dp_locmem")
    product = Product.objects.using("files").create(name="boot", price=1)
    assert shown_price(product.pk) == 1
    caches["dp_locmem"].delete(f"price:{product.pk}")  # cold: the next request reads the database

    def concurrent_request():
        try:
            seen.append(shown_price(product.pk))
        finally:
            connections["files"].close()

    seen = []
    with transaction.atomic(using="files"):
        product.price = 2
        product.save(using="files")
        # a request while the change is not committed: it reads the old row
        # and stores it (fresh, for now)
        t = threading.Thread(target=concurrent_request)
        t.start()
        t.join(10)
        assert seen == [1]
        assert caches["dp_locmem"].get(f"price:{product.pk}") == 1
    # the commit invalidated it: the pre-commit value is never served as fresh
    assert caches["dp_locmem"].get(f"price:{product.pk}") is None
    assert shown_price(product.pk) == 2


def test_a_rolled_back_change_invalidates_nothing(db_products):
    invalidate_on_change(Product, tags=lambda p: [f"product:{p.pk}"], using="dp_locmem")
    product = Product.objects.using("files").create(name="hat", price=5)
    assert shown_price(product.pk) == 5
    with pytest.raises(RuntimeError), transaction.atomic(using="files"):
        product.price = 6
        product.save(using="files")
        raise RuntimeError("rolled back")
    assert caches["dp_locmem"].get(f"price:{product.pk}") == 5


def test_deletes_and_both_sides_of_a_many_to_many_invalidate(db_products):
    invalidate_on_change(
        Product, tags=lambda p: [f"product:{p.pk}", f"category:{p.category_id}"], using="dp_locmem"
    )
    shoes = Category.objects.using("files").create(name="shoes")
    boot = Product.objects.using("files").create(name="boot", category=shoes)
    sale = Label.objects.using("files").create(name="sale")
    cache = caches["dp_locmem"]

    def cached_again():
        cache.set("page", "old", tags=[f"product:{boot.pk}"])
        cache.set("shelf", "old", tags=[f"category:{shoes.pk}"])

    for change in (
        lambda: boot.labels.add(sale),  # this side
        lambda: sale.products.remove(boot),  # the other side
        lambda: sale.products.add(boot),
        lambda: sale.products.clear(),  # the other side, before the rows go
        lambda: boot.delete(),
    ):
        cached_again()
        change()
        assert cache.get("page") is None, change
    assert cache.get("shelf") is None  # the delete carried the category tag too


def test_invalidate_on_change_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="model"):
        invalidate_on_change(object, tags=lambda o: [])
    with pytest.raises(TypeError, match="callable"):
        invalidate_on_change(Product, tags=["x"])


def test_the_command_invalidates_tags():
    cache = caches["dp_locmem"]
    cache.clear()
    cache.get_or_set("k", "v", tags="t")
    out = io.StringIO()
    call_command("dogpile", "invalidate", "--tag", "t", "--tag", "nobody", "--alias", "dp_locmem", stdout=out)
    assert "tag t: invalidated (stale) on dp_locmem" in out.getvalue()
    assert "tag nobody: nothing carries it" in out.getvalue()
    assert cache.get("k") is None
    assert cache.get_or_set_status("k", "v2")[1] == "EXPIRED"
    call_command("dogpile", "invalidate", "--tag", "t", "--hard", "--alias", "dp_locmem", stdout=out)
    assert cache.get_or_set_status("k", "v3")[1] == "MISS"
    with pytest.raises(CommandError, match="not both"):
        call_command("dogpile", "invalidate", "k", "--tag", "t")
    with pytest.raises(CommandError, match="needs a key"):
        call_command("dogpile", "invalidate")

"""``{% dogpile_prefetch %}``: a loop's fragments read in one round trip --
counted on the servers -- rendering exactly what the tags alone render."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.template import Context, Engine, TemplateSyntaxError
from django.test import override_settings

from django_dogpile.testing import Clock
from tests.helpers.proxy import counted_memcached, one_multi_get
from tests.stores.test_redis import Monitor

CARD = (
    '{% dogpile_cache 100 "card" item.pk %}<li>{{ item.name }} {{ counter.tick }}</li>{% enddogpile_cache %}'
)
TEMPLATES = {
    "plain.html": "{% load dogpile %}<ul>{% for item in items %}" + CARD + "{% endfor %}</ul>",
    "prefetched.html": (
        '{% load dogpile %}{% dogpile_prefetch "card" item.pk for item in items %}'
        "<ul>{% for item in items %}" + CARD + "{% endfor %}</ul>"
    ),
    "included.html": (
        '{% load dogpile %}{% dogpile_prefetch "card" item.pk for item in items %}'
        '<ul>{% for item in items %}{% include "card.html" %}{% endfor %}</ul>'
    ),
    "card.html": "{% load dogpile %}" + CARD,
}
ENGINE = Engine(
    loaders=[("django.template.loaders.locmem.Loader", TEMPLATES)],
    libraries={"dogpile": "django_dogpile.templatetags.dogpile"},
)


class Counter:
    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1
        return self.n


def render(name, items, counter=None, alias="dp_redis"):
    with override_settings(DOGPILE={"CACHE_ALIAS": alias}):
        return ENGINE.get_template(name).render(Context({"items": items, "counter": counter or Counter()}))


ITEMS = [{"pk": i, "name": f"n{i}"} for i in range(50)]


def counted(redis_server, fn):
    raw = caches["redis"].client.get_client(write=True)
    monitor = Monitor(redis_server.port)
    try:
        raw.execute_command("PING", "start-pf")
        monitor.commands("start-pf")
        out = fn()
        raw.execute_command("PING", "end-pf")
        return out, monitor.commands("end-pf")
    finally:
        monitor.close()


@pytest.mark.parametrize("name", ["prefetched.html", "included.html"])
def test_fifty_cards_on_a_hit_are_one_mget_and_render_as_without(redis_server, name):
    caches["dp_redis"].clear()
    counter = Counter()
    first = render("plain.html", ITEMS, counter)
    assert counter.n == 50
    plain, plain_cmds = counted(redis_server, lambda: render("plain.html", ITEMS))
    fetched, cmds = counted(redis_server, lambda: render(name, ITEMS))
    assert plain == first and fetched == first  # the same bytes
    assert plain_cmds == ["GET"] * 50
    assert cmds == ["MGET"]


def test_missing_cards_cost_no_read_after_the_prefetch(redis_server):
    caches["dp_redis"].clear()
    counter = Counter()
    out, cmds = counted(redis_server, lambda: render("prefetched.html", ITEMS[:5], counter))
    assert counter.n == 5 and out == render("plain.html", ITEMS[:5])
    assert cmds[0] == "MGET" and "GET" not in cmds  # each card made, none read again
    assert render("prefetched.html", ITEMS[:5], counter) == out and counter.n == 5  # stored


def test_stale_cards_are_re_rendered_once_each_as_without():
    caches["dp_locmem"].clear()
    with Clock() as clock:
        counter = Counter()
        first = render("prefetched.html", ITEMS[:3], counter, "dp_locmem")
        clock.advance(101)  # stale, within GRACE
        again = render("prefetched.html", ITEMS[:3], counter, "dp_locmem")
        assert counter.n == 6  # one re-render each, by this caller
        assert again != first
        assert render("prefetched.html", ITEMS[:3], counter, "dp_locmem") == again
        assert counter.n == 6
    stats = caches["dp_locmem"].binding.stats.snapshot()
    assert stats["EXPIRED"] >= 3


@pytest.mark.memcached
def test_memcached_fifty_cards_on_a_hit_are_one_get(memcached_server):
    with counted_memcached(memcached_server.port) as proxy:
        first = render("prefetched.html", ITEMS, alias="dp_mc_counted")
        proxy.sent.clear()
        assert render("prefetched.html", ITEMS, alias="dp_mc_counted") == first
        assert one_multi_get(proxy, 50), proxy.sent


def test_a_card_the_prefetch_did_not_make_reads_itself_and_records_are_used_once():
    caches["dp_locmem"].clear()
    other = ENGINE.from_string(
        '{% load dogpile %}{% dogpile_prefetch "card" item.pk for item in items %}'
        '{% for item in items %}{% dogpile_cache 100 "other" item.pk %}o{{ item.pk }}{% enddogpile_cache %}'
        "{% endfor %}" + "{% for item in items %}" + CARD + CARD + "{% endfor %}"
    )
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_locmem"}):
        counter = Counter()
        out = other.render(Context({"items": ITEMS[:2], "counter": counter}))
    assert out.startswith("o0o1")
    assert counter.n == 2  # the second tag of each card served what the first stored


def test_a_plain_django_cache_serves_the_values_found():
    caches["locmem"].clear()
    counter = Counter()
    first = render("prefetched.html", ITEMS[:3], counter, "locmem")
    assert render("prefetched.html", ITEMS[:3], counter, "locmem") == first
    assert counter.n == 3


def test_unpacking_and_using():
    t = ENGINE.from_string(
        '{% load dogpile %}{% dogpile_prefetch "pair" a b for a, b in pairs using="dp_locmem" %}'
        '{% for a, b in pairs %}{% dogpile_cache 100 "pair" a b using="dp_locmem" %}{{ a }}{{ b }}'
        "{% enddogpile_cache %}{% endfor %}"
    )
    assert t.render(Context({"pairs": [(1, 2), (3, 4)]})) == "1234"


@pytest.mark.parametrize(
    "source, message",
    [
        ('{% dogpile_prefetch "card" item.pk %}', "then 'for VAR in LIST'"),
        ('{% dogpile_prefetch "card" for item of items %}', "then 'for VAR in LIST'"),
        ("{% dogpile_prefetch %}", "then 'for VAR in LIST'"),
    ],
)
def test_bad_grammar_is_a_clear_template_error(source, message):
    with pytest.raises(TemplateSyntaxError, match=message):
        ENGINE.from_string("{% load dogpile %}" + source)


def test_an_unknown_alias_is_a_clear_error():
    t = ENGINE.from_string('{% load dogpile %}{% dogpile_prefetch "c" i for i in items using="nope" %}')
    with pytest.raises(TemplateSyntaxError, match="using='nope' is not a cache alias"):
        t.render(Context({"items": [1]}))


def test_an_iterator_is_left_to_the_loop():
    caches["dp_locmem"].clear()
    t = ENGINE.get_template("prefetched.html")
    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_locmem"}):
        out = t.render(Context({"items": iter(ITEMS[:3]), "counter": Counter()}))
    assert out.count("<li>") == 3


def test_records_end_with_the_render():
    """The same Context rendered twice (a mail-out job): a record the first
    render prefetched and did not use is not served by the second."""
    caches["dp_locmem"].clear()
    t = ENGINE.from_string(
        '{% load dogpile %}{% if pre %}{% dogpile_prefetch "card" item.pk for item in items %}{% endif %}'
        "{% for item in shown %}" + CARD + "{% endfor %}"
    )
    from django_dogpile.faces.common import make_fragment_key

    with override_settings(DOGPILE={"CACHE_ALIAS": "dp_locmem"}):
        caches["dp_locmem"].set(make_fragment_key("card", [0]), "<li>old</li>")
        context = Context({"items": ITEMS[:1], "shown": [], "pre": True, "counter": Counter()})
        assert t.render(context) == ""  # prefetched, not shown
        caches["dp_locmem"].set(make_fragment_key("card", [0]), "<li>new</li>")
        context.update({"shown": ITEMS[:1], "pre": False})
        assert t.render(context) == "<li>new</li>"

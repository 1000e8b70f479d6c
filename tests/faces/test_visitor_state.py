"""``{% dogpile_cache %}`` beside one visitor's state, through the full
contrib middleware stack: flash messages shown before, inside and after the
tag, and a first visitor's CSRF cookie while ``BACKGROUND`` re-renders a
fragment of the same page."""

from __future__ import annotations

import re
import time

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import Client, override_settings

from django_dogpile.faces.common import make_fragment_key


@pytest.fixture
def site():
    with override_settings(ROOT_URLCONF="tests.helpers.visitors", MIDDLEWARE=settings.FULL_STACK):
        caches["dp_locmem"].clear()
        caches["dp_bg"].clear()
        yield


def _box(html):
    return re.search(r"box (\d+)", html).group(1)


@pytest.mark.parametrize(
    "where, shown, fragment_shows_messages",
    [
        ("before", 1, False),
        ("inside", 1, True),
        ("after", 1, False),
        ("before-and-inside", 2, True),
    ],
)
def test_no_fragment_shows_one_visitors_messages_to_another(site, where, shown, fragment_shows_messages):
    """Django's {% cache %} would store Alice's message in the "inside"
    layouts and show it to Bob; ours stores a fragment only when rendering
    it iterated no messages -- even when the page showed them before the tag
    (the storage was already marked used then)."""
    alice, bob = Client(), Client()
    seen_by_alice = alice.get(f"/layout/{where}/?charge=Alice").content.decode()
    assert seen_by_alice.count("Alice, your card ending 4242 was charged") == shown
    seen_by_bob = bob.get(f"/layout/{where}/").content.decode()
    assert "Alice" not in seen_by_bob
    # a fragment that showed no messages was stored, and Bob got it
    assert (_box(seen_by_alice) == _box(seen_by_bob)) is not fragment_shows_messages
    # Alice's message was shown once, and is gone
    assert "Alice" not in alice.get(f"/layout/{where}/").content.decode()


def test_a_message_shown_before_the_tag_is_still_marked_shown(site):
    """Lowering the storage's ``used`` mark for the tag's block must not lose
    it: the message, shown above the tag, is not shown again."""
    client = Client()
    assert "Carol" in client.get("/layout/before/?charge=Carol").content.decode()
    assert "Carol" not in client.get("/layout/before/").content.decode()


def test_a_background_rerender_keeps_a_first_visitors_csrf_cookie(site):
    """The pool thread renders a copy of the request: it cannot lower the
    live request's CSRF cookie flag while the response goes out, so a
    first-time visitor gets the cookie and the page's own form POSTs."""
    Client().get("/form/")  # stores the fragment
    first = Client().get("/form/").content.decode()
    caches["dp_bg"].invalidate(make_fragment_key("side"))
    visitor = Client(enforce_csrf_checks=True)
    page = visitor.get("/form/")
    assert re.search(r"side \d+", page.content.decode()).group() == re.search(r"side \d+", first).group()
    assert "csrftoken" in page.cookies, "no CSRF cookie for a first-time visitor"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    assert visitor.post("/form/", {"csrfmiddlewaretoken": token}).status_code == 200
    # and the pool thread did regenerate the fragment, for everyone
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        again = Client().get("/form/").content.decode()
        if re.search(r"side \d+", again).group() != re.search(r"side \d+", first).group():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the background re-render never stored the fragment")


@pytest.mark.parametrize("how", ["tag", "value"])
def test_a_token_used_before_the_tag_and_inside_it_is_never_stored(site, how):
    """The page's own form (a logout button in the header) evaluates the
    lazy CSRF token before the tag: the fragment's second use calls nothing,
    yet it is the visitor's token, and Bob must never get Alice's."""
    alice, bob = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    alice.get(f"/token-twice/{how}/")
    page = bob.get(f"/token-twice/{how}/").content.decode()
    token = re.search(r'(?:id=frag>.*?value="|<b>)([^"<]+)', page).group(1)
    secret = bob.cookies["csrftoken"].value
    from django.middleware.csrf import _unmask_cipher_token

    assert _unmask_cipher_token(token) == secret, "the fragment carries another visitor's token"


def test_a_fragment_that_only_counts_messages_is_not_stored(site):
    alice, bob = Client(), Client()
    assert "you have 1 messages" in alice.get("/count/?charge=Alice").content.decode()
    assert "you have" not in bob.get("/count/").content.decode()

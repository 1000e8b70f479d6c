"""The demo in a real headless Chromium (Debian's chromium + chromium-driver).

The browser is installed by ``./dev test`` / ``.ci/run`` (apt-get), never
downloaded at run time.  Outside CI the test skips when it is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.helpers.demo_server import DemoServer
from tests.helpers.redis_server import required

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - the test extra has it
        missing.append(str(exc))
    if missing:
        if required():
            pytest.fail(f"the browser test must run here (CI) but is missing: {missing}")
        pytest.skip(f"no headless browser: {missing}")
    profile = tempfile.mkdtemp(prefix="dogpile-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo():
    server = DemoServer(DEMO_SLOW="0.05", DEMO_TIMEOUT="60", DEMO_TOOLBAR="0")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def toolbar_demo():
    """The demo with django-debug-toolbar and the Dogpile panel (as ``./dev demo``)."""
    pytest.importorskip("debug_toolbar")
    server = DemoServer(DEMO_SLOW="0.05", DEMO_TIMEOUT="60", DEMO_TOOLBAR="1")
    server.start()
    yield server
    server.stop()


def text(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def counter(driver, name):
    return int(text(driver, f"#counters td.{name}"))


def test_pages_render_in_a_real_browser(browser, demo):
    from selenium.webdriver.common.by import By

    browser.get(demo.url + "/")
    assert "django-dogpile demo" in text(browser, "h1")
    links = {a.get_attribute("pathname") for a in browser.find_elements(By.TAG_NAME, "a")}
    assert {"/report/", "/report/plain/", "/fragment/", "/function/", "/stats/"} <= links

    browser.get(demo.url + "/report/")
    first = text(browser, "#result")
    assert "computed (run #1)" in first
    browser.refresh()
    assert text(browser, "#result") == first  # served from the cache

    for path in ("/fragment/", "/function/", "/report/plain/"):
        browser.get(demo.url + path)
        assert "computed (run #" in browser.find_element(By.TAG_NAME, "body").text, path


def test_stats_chart_appears_and_counters_move(browser, demo):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(demo.url + "/stats/")
    chart = browser.find_element(By.CSS_SELECTOR, "svg#chart")
    assert chart.is_displayed()
    assert chart.size["width"] > 100 and chart.size["height"] > 100, chart.size
    bars = chart.find_elements(By.TAG_NAME, "rect")
    assert len(bars) == 9  # one per counter
    hits_before = counter(browser, "HIT")
    widths_before = [b.size["width"] for b in bars]

    # (/report/ is sent with Cache-Control: max-age, so the browser's own
    # cache answers its reloads: use the pages that reach the server)
    for _ in range(5):
        browser.get(demo.url + "/fragment/")
        browser.get(demo.url + "/function/")

    browser.get(demo.url + "/stats/")
    assert counter(browser, "HIT") >= hits_before + 10
    bars = browser.find_elements(By.CSS_SELECTOR, "svg#chart rect")
    assert [b.size["width"] for b in bars] != widths_before  # the chart is redrawn
    rows = browser.find_elements(By.CSS_SELECTOR, "#keys tr")
    faces = " ".join(r.text for r in rows)
    for face in ("dogpile_cache_page", "{% dogpile_cache %}", "cached()"):
        assert face in faces, faces
    per_face = {
        r.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in r.find_elements(By.TAG_NAME, "td")]
        for r in browser.find_elements(By.CSS_SELECTOR, "#per-face tr")[1:]
    }
    function = per_face["cached()"]  # face, keys, hits, stale, regenerations, ...
    assert int(function[2]) >= 4 and int(function[4]) == 1, per_face

    # The page refreshes itself: counters move with no action of ours.
    hits = counter(browser, "HIT")
    from urllib.request import urlopen

    urlopen(demo.url + "/report/", timeout=10).read()  # a request from elsewhere
    from selenium.common.exceptions import StaleElementReferenceException

    # (the page replaces itself while refreshing: an element read mid-way is stale)
    WebDriverWait(
        browser, 10, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: counter(d, "HIT") > hits)


def test_toolbar_panel_shows_the_status_words(browser, toolbar_demo):
    """The Dogpile panel in the real toolbar (its JavaScript loads the panel):
    a stale fragment served while a pool thread makes it, a fresh cached()."""
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(toolbar_demo.url + "/panel/")  # made: the fragment lives 2 s
    time.sleep(2.2)
    browser.get(toolbar_demo.url + "/panel/")
    # the toolbar lives in a shadow root from django-debug-toolbar 7 on (6 for Django 4.2)
    found = browser.find_elements(By.ID, "djDebugRoot")
    root = (found and browser.execute_script("return arguments[0].shadowRoot", found[0])) or browser
    wait = WebDriverWait(root, 15, poll_frequency=0.2)
    button = wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#djdt-DogpilePanel a")))
    assert "2 calls" in button.text and "1 HIT" in button.text and "1 UPDATING" in button.text, button.text
    button.click()
    wait.until(shown.visibility_of_element_located((By.CSS_SELECTOR, "table.djdt-dogpile-calls")))
    rows = root.find_elements(By.CSS_SELECTOR, "tr.djdt-dogpile-call")
    seen = {
        tds[2].text: (tds[4].text, tds[1].text, tds[5].text)  # alias: (status, method, store calls)
        for tds in (r.find_elements(By.TAG_NAME, "td")[:8] for r in rows)
    }
    assert seen.pop("default") == ("HIT", "get_or_set", "1"), seen  # the hit's one read
    assert seen.pop("background")[:2] == ("UPDATING", "get_or_set") and not seen, seen
    word = root.find_element(By.CSS_SELECTOR, "tr[data-status=UPDATING] .djdt-dogpile-word")
    assert word.is_displayed() and word.value_of_css_property("font-weight") in ("700", "bold")
    shots = os.environ.get("DOGPILE_DOCS_SHOTS")  # docs/pictures.py: the docs' picture
    if shots:
        root.find_element(By.CSS_SELECTOR, "tr[data-status=UPDATING] details summary").click()
        browser.save_screenshot(os.path.join(shots, "toolbar-panel.png"))

"""System checks, id by id."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_dogpile.checks import check_caches, check_dogpile_setting, check_store_is_shared

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
DP = "django_dogpile.cache.DogpileCache"


def ids(messages):
    return [m.id for m in messages]


def caches_with(**dp):
    return {"default": LOCMEM, "store": LOCMEM, "dp": {"BACKEND": DP, "LOCATION": "store", **dp}}


@pytest.mark.parametrize(
    "conf, expected",
    [
        ({}, []),
        ({"LOCATION": "nope"}, ["django_dogpile.E001"]),
        ({"LOCATION": ""}, ["django_dogpile.E001"]),
        ({"LOCATION": "dp"}, ["django_dogpile.E002"]),
        ({"TIMEOUT": "300"}, []),  # as Django's BaseCache reads it: int("300")
        ({"TIMEOUT": "soon"}, ["django_dogpile.E003"]),
        ({"TIMEOUT": float("nan")}, ["django_dogpile.E003"]),
        ({"OPTIONS": {"LOCK_TIMEOUT": float("inf")}}, ["django_dogpile.E006"]),
        ({"OPTIONS": {"GRACE": float("nan")}}, ["django_dogpile.E005"]),
        ({"OPTIONS": {"WAIT_TIMEOUT": float("inf")}}, ["django_dogpile.E007"]),
        ({"OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}}, ["django_dogpile.W002"]),
        ({"TIMEOUT": -5}, ["django_dogpile.E003"]),
        ({"OPTIONS": {"GRAVE": 1}}, ["django_dogpile.E004"]),
        ({"OPTIONS": []}, ["django_dogpile.E004"]),
        ({"OPTIONS": {"GRACE": -1}}, ["django_dogpile.E005"]),
        ({"OPTIONS": {"GRACE": "600"}}, []),  # as TIMEOUT: from an environment variable
        ({"OPTIONS": {"GRACE": "10 min"}}, ["django_dogpile.E005"]),
        ({"OPTIONS": {"LOCK_TIMEOUT": 0}}, ["django_dogpile.E006"]),
        ({"OPTIONS": {"LOCK_TIMEOUT": None}}, ["django_dogpile.E006"]),
        ({"OPTIONS": {"WAIT_TIMEOUT": -1}}, ["django_dogpile.E007"]),
        ({"OPTIONS": {"BACKGROUND": "yes"}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"BACKGROUND_WORKERS": 0}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"LOCK": "zookeeper"}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"RETRY_AFTER": -1}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"RETRY_AFTER": "1s"}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"KEY_STATS": True}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"KEY_STATS": -5}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"REGENERATION_BUDGET": 0}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"REGENERATION_BUDGET": 2.5}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"REGENERATION_BUDGET": None}}, []),
        ({"OPTIONS": {"TAGS_MAX_AGE": -1}}, ["django_dogpile.E008"]),
        ({"OPTIONS": {"LOCK": "redis"}}, ["django_dogpile.E009"]),
    ],
)
def test_cache_checks(conf, expected):
    with override_settings(CACHES=caches_with(**conf)):
        messages = check_caches()
    assert ids(messages) == expected
    assert all(m.hint for m in messages)


def test_every_bad_option_is_reported_at_once_naming_the_alias():
    conf = caches_with(
        TIMEOUT="soon", OPTIONS={"GRACE": -1, "LOCK_TIMEOUT": 0, "BACKGROUND": "yes", "LOCK": "x"}
    )
    with override_settings(CACHES=conf):
        messages = check_caches()
    assert ids(messages) == [
        "django_dogpile.E003",
        "django_dogpile.E005",
        "django_dogpile.E006",
        "django_dogpile.E008",
        "django_dogpile.E008",
    ]
    assert all("CACHES['dp']" in m.msg for m in messages)
    assert "'BACKGROUND'" in messages[3].msg


def test_pointing_at_another_dogpile_cache():
    conf = caches_with()
    conf["dp2"] = {"BACKEND": DP, "LOCATION": "dp"}
    with override_settings(CACHES=conf):
        assert ids(check_caches()) == ["django_dogpile.E002"]


@pytest.mark.parametrize(
    "dogpile, expected",
    [
        (None, []),
        ({"CACHE_ALIAS": "dp", "TIMEOUT": 60}, []),
        ([], ["django_dogpile.E010"]),
        ({"ALIAS": "dp"}, ["django_dogpile.E010"]),
        ({"CACHE_ALIAS": "missing"}, ["django_dogpile.E011"]),
        ({"TIMEOUT": "60"}, []),
        ({"TIMEOUT": "soon"}, ["django_dogpile.E012"]),
        ({"KEY_PREFIX": 3}, ["django_dogpile.E012"]),
        ({"STATUS_HEADER": 1}, ["django_dogpile.E012"]),
    ],
)
def test_dogpile_setting_checks(dogpile, expected):
    with override_settings(CACHES=caches_with(), DOGPILE=dogpile):
        messages = check_dogpile_setting()
    assert ids(messages) == expected
    assert all(m.hint for m in messages)


def test_locmem_store_warns_on_deploy_only():
    with override_settings(CACHES=caches_with()):
        assert ids(check_store_is_shared()) == ["django_dogpile.W001"]
    from django.core import checks

    assert check_store_is_shared in checks.registry.registry.deployment_checks


def test_manage_py_check_reports_instead_of_traceback():
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with override_settings(CACHES=caches_with(OPTIONS={"GRACE": "x"})):
        with pytest.raises(SystemCheckError, match="django_dogpile.E005"):
            call_command("check")


def test_a_face_on_a_plain_cache_is_a_warning_naming_the_alias_and_the_fix():
    from django_dogpile.checks import check_faces_use_dogpile
    from django_dogpile.decorators import cached, dogpile_cache_page
    from django_dogpile.faces.common import declared

    saved = set(declared)
    try:
        declared.clear()
        with override_settings(CACHES=caches_with(), DOGPILE={"CACHE_ALIAS": "default"}):
            messages = check_faces_use_dogpile()
            assert ids(messages) == ["django_dogpile.W003"]
            assert "'default'" in messages[0].msg and "DogpileCache" in messages[0].hint
            dogpile_cache_page(60, cache="store")(lambda request: None)
            cached(60, cache="dp")(lambda: None)
            messages = check_faces_use_dogpile()
            assert sorted(m.obj for m in messages) == ["default", "store"]
            assert any("dogpile_cache_page" in m.msg for m in messages)
        with override_settings(CACHES=caches_with(), DOGPILE={"CACHE_ALIAS": "dp"}):
            declared.clear()
            cached(60)(lambda: None)
            assert check_faces_use_dogpile() == []  # the default is a DogpileCache
    finally:
        declared.clear()
        declared.update(saved)


def test_a_face_on_a_plain_cache_logs_once(caplog):
    from django.core.cache import caches

    from django_dogpile.decorators import cached
    from django_dogpile.faces import common as faces

    faces._warned.discard(("cached()", "locmem"))

    @cached(60, cache="locmem")
    def f():
        return 1

    with caplog.at_level("WARNING", logger="django_dogpile.faces.common"):
        f(), f()
    caches["locmem"].clear()
    assert [r.message for r in caplog.records].count(
        "cached() uses the cache 'locmem', which is not a DogpileCache: no stampede "
        "protection. Point it at a DogpileCache alias."
    ) == 1


NO_APP_SETTINGS = """
SECRET_KEY = "x"
INSTALLED_APPS = ["django.contrib.contenttypes"]{extra_app}
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [{templates!r}]}}]
CACHES = {{
    "store": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    "default": {{"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "store"}},
}}
"""

RENDER = """
import django
django.setup()
from django.core.cache import cache
from django.template import TemplateSyntaxError
from django.template.loader import get_template
import threading
print(cache.get_or_set_status("k", "v", 60), cache.get_or_set_status("k", "v", 60))
other = threading.Thread(target=lambda: cache.get("k"))  # a thread builds its own instance
other.start()
other.join()
try:
    get_template("uses_tag.html")
except TemplateSyntaxError as exc:
    print("TemplateSyntaxError", exc)
"""

FIX = 'Add "django_dogpile" to INSTALLED_APPS.'


def run_without_app(tmp_path, *args, installed=False):
    """Run ``python *args`` on a settings module naming DogpileCache in CACHES
    (with ``"django_dogpile"`` in INSTALLED_APPS only if ``installed``)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "uses_tag.html").write_text(
        "{% load dogpile %}{% dogpile_cache 60 x %}x{% enddogpile_cache %}"
    )
    extra = ' + ["django_dogpile"]' if installed else ""
    (tmp_path / "noapp_settings.py").write_text(
        NO_APP_SETTINGS.format(extra_app=extra, templates=str(templates))
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DOGPILE_", "PYTHON"))}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{root}", DJANGO_SETTINGS_MODULE="noapp_settings")
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_without_the_app_check_warns_naming_the_fix(tmp_path):
    # Django's own cache checks build every alias, DogpileCache among them
    out = run_without_app(tmp_path, "-m", "django", "check")
    assert out.returncode == 0, out.stderr  # a warning, not an error: the backend works
    assert "System check identified no issues" in out.stdout
    assert out.stderr.count(FIX) == 1, out.stderr
    assert "{% load dogpile %} fails" in out.stderr

    installed = run_without_app(tmp_path, "-m", "django", "check", installed=True)
    assert installed.returncode == 0, installed.stderr
    assert "INSTALLED_APPS" not in installed.stderr


def test_without_the_app_the_backend_works_and_the_tag_failure_is_explained(tmp_path):
    out = run_without_app(tmp_path, "-c", RENDER)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "('v', 'MISS') ('v', 'HIT')"
    # (Django 6.1 puts "Template: <path>, " before its message)
    assert lines[1].startswith("TemplateSyntaxError "), lines[1]
    assert "'dogpile' is not a registered tag library" in lines[1]
    assert out.stderr.count(FIX) == 1, out.stderr  # once per process, not per cache built

    installed = run_without_app(tmp_path, "-c", RENDER, installed=True)
    assert installed.stdout.splitlines() == ["('v', 'MISS') ('v', 'HIT')"], installed.stderr
    assert "INSTALLED_APPS" not in installed.stderr


@pytest.mark.parametrize(
    "backend, options, expected",
    [
        ("django.core.cache.backends.locmem.LocMemCache", {}, ["django_dogpile.W001"]),
        ("django.core.cache.backends.dummy.DummyCache", {}, ["django_dogpile.W001"]),
        ("django_redis.cache.RedisCache", {"LOCK": "local"}, ["django_dogpile.W001"]),
        ("django.core.cache.backends.filebased.FileBasedCache", {}, ["django_dogpile.W004"]),
        ("tests.settings.SomeOtherCache", {}, ["django_dogpile.W004"]),
        ("django_redis.cache.RedisCache", {}, []),
        ("django_valkey.cache.ValkeyCache", {}, []),
        ("django.core.cache.backends.redis.RedisCache", {}, []),
        ("django.core.cache.backends.memcached.PyMemcacheCache", {}, []),
        ("django.core.cache.backends.db.DatabaseCache", {}, []),
    ],
)
def test_deploy_check_names_stores_whose_lease_does_not_reach_every_worker(backend, options, expected):
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "the_store": {"BACKEND": backend, "LOCATION": "somewhere"},
        "dp": {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "the_store", "OPTIONS": options},
    }
    with override_settings(CACHES=caches):
        messages = check_store_is_shared()
    assert ids(messages) == expected
    for m in messages:  # names the alias, the store alias and the store's class
        assert "'dp'" in m.msg and "'the_store'" in m.msg and backend in m.msg, m.msg
        assert m.hint

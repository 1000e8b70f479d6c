"""The store contract that ``django_dogpile.testing.StoreContract`` ships,
run over every store of the suite, as a user runs it over their own."""

from __future__ import annotations

import unittest

from django_dogpile.testing import StoreContract
from tests.helpers.stores import STORES

for _row in STORES:
    (_alias,) = _row.values
    _cls: type = type(
        f"Test{_alias.title().replace('_', '')}Contract",
        (StoreContract, unittest.TestCase),
        {"store_alias": _alias, "__module__": __name__},
    )
    for _mark in _row.marks:
        _cls = _mark(_cls)
    globals()[_cls.__name__] = _cls
del _row, _alias, _cls, _mark


def test_the_contract_fails_over_a_store_whose_add_is_no_lock():
    """The contract can fail: over a store whose ``add()`` always succeeds,
    the lease (and so single flight across processes) does not hold."""
    from django.conf import settings
    from django.test import override_settings

    caches = {**settings.CACHES, "not_a_lock": {"BACKEND": "tests.helpers.backends.NotALockCache"}}
    with override_settings(CACHES=caches):
        case = type("NotALock", (StoreContract, unittest.TestCase), {"store_alias": "not_a_lock"})
        result = unittest.TestResult()
        unittest.defaultTestLoader.loadTestsFromTestCase(case).run(result)
    failed = sorted(test.id().rsplit(".", 1)[1] for test, _ in result.failures + result.errors)
    # the lease holds for no other process; and its add() breaks Django's add()
    assert {"test_the_lease_is_held_by_one_process_at_a_time", "test_basecache_semantics"} <= set(failed)

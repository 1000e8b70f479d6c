"""Checked by ``mypy --strict`` in tests/system/test_typing.py: each ``type: ignore``
below must be needed (``--warn-unused-ignores``), so a decorator that erased
the signature (``Any``) would make this file fail."""

from __future__ import annotations

from django_dogpile.decorators import cached


@cached(60)
def totals(year: str, *, region: str = "all") -> dict[str, int]:
    return {year: 1}


@cached(60)
async def fetch(n: int) -> list[int]:
    return [n]


def use() -> None:
    ok: dict[str, int] = totals("2026", region="eu")
    key: str = totals.key_for("2026")
    assert totals.invalidate("2026") in (True, False)
    totals("x", bogus=1)  # type: ignore[call-arg]
    totals(2026)  # type: ignore[arg-type]
    wrong: int = totals("2026")  # type: ignore[assignment]
    del ok, key, wrong


async def ause() -> None:
    values: list[int] = await fetch(1)
    await fetch.ainvalidate(1)
    fetch("1")  # type: ignore[arg-type, unused-coroutine]
    del values

"""View runs over time, for the stats page's picture of a stampede.

Each slow run adds one to a counter per face and per second in the
``timeline`` cache alias (the demo's Redis under its own key prefix, or
a locmem of its own), kept for ``WINDOW`` seconds: so the processes of one
server share it when the store is shared, and it never holds more than
``WINDOW`` counters per face.  :func:`draw` turns them into inline SVG (no
JavaScript).
"""

from __future__ import annotations

import re
import time

from django.core.cache import caches
from django.utils.html import escape

__all__ = ["BUCKET", "WINDOW", "draw", "read", "record"]

#: seconds per point of the picture, and how many seconds are kept
BUCKET = 1
WINDOW = 120
#: the picture starts just before the first run in the window, but shows at
#: least this many seconds: a stampede of a few seconds fills it
MIN_SPAN = 30

ALIAS = "timeline"


def _key(face: str, bucket: int) -> str:
    return "runs:" + re.sub(r"[^a-z0-9]+", "-", face.lower()).strip("-") + f":{bucket}"


def record(face: str, now: float | None = None) -> None:
    """Count one run of ``face`` in the current second; never raise.

    One round trip once the second's counter exists.  A store that is down
    loses the point, not the request.
    """
    key = _key(face, int((time.time() if now is None else now) // BUCKET))
    store = caches[ALIAS]
    try:
        try:
            store.incr(key)
        except ValueError:  # the first run in this second
            if not store.add(key, 1, WINDOW + 2 * BUCKET):
                store.incr(key)  # another thread or process added it first
    except Exception:  # a demo's picture must not fail a page
        pass


def read(faces: list[str], now: float | None = None) -> dict[str, list[int]]:
    """Runs per second of each face over the last ``WINDOW`` seconds, oldest first."""
    last = int((time.time() if now is None else now) // BUCKET)
    buckets = range(last - WINDOW // BUCKET + 1, last + 1)
    keys = {(face, b): _key(face, b) for face in faces for b in buckets}
    try:
        found = caches[ALIAS].get_many(list(keys.values()))
    except Exception:  # a store that is down: an empty picture
        found = {}
    return {face: [int(found.get(keys[face, b]) or 0) for b in buckets] for face in faces}


def _nice(top: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``top``."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= top:
                return m * step
        step *= 10


def draw(series: list[tuple[str, str, list[int]]]) -> str:
    """Inline SVG: one line per ``(label, colour, counts)``, with axes and a legend.

    ``counts`` are runs per ``BUCKET``, oldest first, the last one now; the
    quiet seconds before the first run are left out (down to ``MIN_SPAN``).
    Each line carries the counts it draws (``data-counts``) and their sum
    (``data-total``), for tests and for anyone reading the page's source.
    """
    n = max((len(counts) for _, _, counts in series), default=0)
    first = min((i for _, _, counts in series for i, c in enumerate(counts) if c), default=n)
    start = max(0, min(first - 2, n - MIN_SPAN // BUCKET))
    series = [(label, colour, counts[start:]) for label, colour, counts in series]
    span = max(n - start, 1) * BUCKET  # seconds shown
    width, height = 680, 280
    left, right, top, bottom = 48, 12, 12, 230  # the plot area
    plot_w = width - left - right
    peak = _nice(max([c for _, _, counts in series for c in counts] + [1]))

    def x(ago: float) -> float:  # seconds ago -> abscissa
        return width - right - plot_w * ago / span

    def y(v: float) -> float:
        return bottom - (bottom - top) * v / peak

    parts = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="view runs per {BUCKET} s, last {span} s" '
        f'data-bucket-seconds="{BUCKET}" data-span-seconds="{span}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{bottom - top}" fill="#fafafa" stroke="#999"/>',
    ]
    for v in sorted({0, peak // 2, peak}):  # y axis
        parts.append(
            f'<line x1="{left - 4}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>'
        )
    every = next(t for t in (5, 10, 20, 30, 60, 120, 300) if span / t <= 6 or t == 300)
    for ago in range(0, span + 1, every):  # x axis: seconds ago
        parts.append(
            f'<line x1="{x(ago):.1f}" y1="{bottom}" x2="{x(ago):.1f}" y2="{bottom + 4}" '
            'stroke="#999"/>'
            f'<text x="{x(ago):.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{'now' if ago == 0 else f'-{ago} s'}</text>"
        )
    middle = (top + bottom) / 2
    parts.append(
        f'<text x="12" y="{middle:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {middle:.0f})">view runs per {BUCKET} s</text>'
    )
    for row, (label, colour, counts) in enumerate(series):
        # bucket i (of len(counts)) is centred half a bucket before its end
        at = [(x((len(counts) - i - 0.5) * BUCKET), y(c)) for i, c in enumerate(counts)]
        total = sum(counts)
        parts.append(
            f'<polyline class="series" data-face="{escape(label)}" data-total="{total}" '
            f'data-counts="{",".join(map(str, counts))}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in at)}"/>'
        )
        parts.extend(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>'
            for (px, py), c in zip(at, counts)
            if c
        )
        ly, lx = bottom + 36, left + row * 300  # the legend: one line
        parts.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 24}" y2="{ly - 4}" stroke="{colour}" '
            f'stroke-width="3"/><text x="{lx + 30}" y="{ly}">{escape(label)}: '
            f"{total} run{'' if total == 1 else 's'}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)

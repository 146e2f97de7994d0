"""Bar charts as inline SVG, drawn on the server: no script, no other origin, works offline.

Each chart is an ``<svg role="img">`` with a title and a description; every bar carries a
``<title>`` (the tooltip) and the page puts the same numbers in a table beside the chart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 240
HALF_WIDTH = 480
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 36
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Series:
    """One stacked layer: its name, CSS class and one value per bucket."""

    name: str
    css_class: str
    values: Sequence[float | int | Decimal]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least value."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def bar_chart(
    *,
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    width: int = WIDTH,
    limit: tuple[float, str] | None = None,
) -> Markup:
    """A stacked bar chart of series over labels (one bar per label), ``width`` units wide;
    ``limit`` (value, label) draws a dashed line across at that value (a daily budget)."""
    count = max(len(labels), 1)
    totals = [float(sum(float(s.values[i]) for s in series)) for i in range(len(labels))]
    top = nice_ceiling(max([*totals, limit[0] if limit else 0.0], default=0.0))
    ticks = [(top * step / 4, fmt(top * step / 4)) for step in range(5)]
    # The plot starts where the longest axis label ends (about 7 units a character).
    left = max(LEFT, 14 + 7 * max(len(text) for _, text in ticks))
    plot_w, plot_h = width - left - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / count
    bar_w = max(slot * 0.7, 1.0)

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-labelledby="{_id(title)}-t {_id(title)}-d">',
        f'<title id="{_id(title)}-t">{escape(title)}</title>',
        f'<desc id="{_id(title)}-d">{escape(description)}</desc>',
    ]
    for value, text in ticks:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
            f"{escape(text)}</text>"
        )
    max_labels = MAX_X_LABELS * width // WIDTH
    every = max(1, math.ceil(count / max_labels))
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        base = 0.0
        tip = "; ".join(f"{s.name} {fmt(float(s.values[i]))}" for s in series)
        parts.append(f"<g><title>{escape(label)}: {escape(tip)}</title>")
        for s in series:
            value = float(s.values[i])
            if value > 0:
                parts.append(
                    f'<rect class="{s.css_class}" x="{x:.1f}" y="{y(base + value):.1f}" '
                    f'width="{bar_w:.1f}" height="{max(y(base) - y(base + value), 0.5):.1f}"/>'
                )
            base += value
        parts.append("</g>")
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{left + i * slot + slot / 2:.1f}" y="{HEIGHT - 12}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(
        f'<line class="baseline" x1="{left}" x2="{width - RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>'
    )
    if limit is not None:
        at = y(limit[0])
        parts.append(
            f'<g class="limit"><title>{escape(limit[1])}</title>'
            f'<line class="limit-line" x1="{left}" x2="{width - RIGHT}" y1="{at:.1f}" '
            f'y2="{at:.1f}"/><text class="limit-label" x="{width - RIGHT - 4}" '
            f'y="{at - 4:.1f}" text-anchor="end">{escape(limit[1])}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


def _id(title: str) -> str:
    return "chart-" + "".join(c if c.isalnum() else "-" for c in title.lower())


def compact(value: float) -> str:
    """Axis numbers: 1.2K, 3M."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def dollars(value: float) -> str:
    """Axis money without exponents: $0, $0.000025, $0.5, $20, $1.2K."""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${compact(value)}"
    decimals = max(2, 1 - math.floor(math.log10(value)))  # two significant digits
    return f"${value:.{decimals}f}".rstrip("0").rstrip(".")

"""Charts for the ops page, drawn on the server as inline SVG.

Inline SVG needs no script and no image source (the page's Content-Security-Policy allows
neither), reads in any browser and prints. Every mark has a `<title>` (the browser shows it
on hover) and `data-label` / `data-value` (bars) or `data-x` / `data-y` (points), so a test,
or a curious reader of the source, finds the exact numbers drawn. Pure functions of their
numbers: no catalog, no request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 230
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 42
INK, GRID, MUTED = "#222", "#e4e4e4", "#777"
PASS, FAIL, NONE = "#2e7d32", "#c62828", "#9e9e9e"
PALETTE = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f")


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per category; None: nothing to draw
    color: str = PALETTE[0]


def percent(v: float) -> str:
    return f"{v * 100:.0f}%" if v * 100 == round(v * 100) else f"{v * 100:.1f}%"


def number(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def nice_max(v: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `v` (1 for nothing)."""
    if v <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(v))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= v)


def _frame(chart_id: str, title: str, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" class="chart" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title" font-family="system-ui, sans-serif" '
        f'font-size="11">'
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>'
        f'<text x="{LEFT}" y="15" font-size="12" font-weight="600" fill="{INK}">'
        f"{escape(title)}</text>"
    )
    return Markup(head + "".join(body) + "</svg>")


def _empty(chart_id: str, title: str, why: str) -> Markup:
    return _frame(
        chart_id,
        title,
        [
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            f'fill="{MUTED}">{escape(why)}</text>'
        ],
    )


def _y_axis(top: float, fmt: Callable[[float], str], *, whole: bool = False) -> list[str]:
    """Grid lines and labels from 0 to `top`, in 4, 5 or 2 even steps (whole numbers when
    `whole`: counts never read 12.5)."""
    steps = next((n for n in (4, 5, 2) if not whole or (top / n).is_integer()), 1)
    out = []
    plot_h = HEIGHT - TOP - BOTTOM
    for i in range(steps + 1):
        v = top * i / steps
        y = HEIGHT - BOTTOM - plot_h * i / steps
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">'
            f"{escape(fmt(v))}</text>"
        )
    return out


def _y(value: float, top: float) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * min(value, top) / top


def bars(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    as_percent: bool = False,
    category_colors: Sequence[str] | None = None,
    empty: str = "no data yet",
) -> Markup:
    """Grouped bars: one group per category, one bar per series (a None value draws none).
    `category_colors` colours a single series' bars one by one (e.g. by gate verdict)."""
    drawn = [v for s in series for v in s.values if v is not None]
    if not categories or not drawn:
        return _empty(chart_id, title, empty)
    fmt = percent if as_percent else number
    top = 1.0 if as_percent else nice_max(max(drawn))
    body = _y_axis(top, fmt, whole=not as_percent and all(v.is_integer() for v in drawn))
    slot = (WIDTH - LEFT - RIGHT) / len(categories)
    bar_w = min(48.0, slot * 0.8 / len(series))
    for i, category in enumerate(categories):
        x0 = LEFT + slot * i + (slot - bar_w * len(series)) / 2
        for j, s in enumerate(series):
            v = s.values[i]
            if v is None:
                continue
            color = category_colors[i] if category_colors else s.color
            y = _y(v, top)
            tip = f"{category} {s.name}: {fmt(v)}"
            body.append(
                f'<rect class="bar" x="{x0 + j * bar_w:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{HEIGHT - BOTTOM - y:.1f}" fill="{escape(color)}" '
                f'data-series="{escape(s.name)}" data-label="{escape(category)}" '
                f'data-value="{v:g}"><title>{escape(tip)}</title></rect>'
            )
        body.append(
            f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{HEIGHT - BOTTOM + 14}" '
            f'text-anchor="middle" fill="{INK}">{escape(_short(category, slot))}</text>'
        )
    if len(series) > 1:
        body += _legend([(s.name, s.color) for s in series])
    return _frame(chart_id, title, body)


def line(
    chart_id: str,
    title: str,
    points: Sequence[tuple[datetime, float]],
    *,
    empty: str = "no data yet",
) -> Markup:
    """A step-free line over time; the first and last times label the x axis."""
    if len(points) < 2:
        return _empty(chart_id, title, empty)
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    span = (t1 - t0) or 1.0
    top = nice_max(max(v for _, v in points))
    body = _y_axis(top, number, whole=all(float(v).is_integer() for _, v in points))
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: datetime) -> float:
        return LEFT + plot_w * (t.timestamp() - t0) / span

    path = " ".join(f"{x(t):.1f},{_y(v, top):.1f}" for t, v in points)
    body.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    for t, v in points:
        tip = f"{t:%Y-%m-%d %H:%M:%S} UTC: {number(v)}"
        body.append(
            f'<circle class="point" cx="{x(t):.1f}" cy="{_y(v, top):.1f}" r="2.5" '
            f'fill="{PALETTE[0]}" data-x="{t.isoformat()}" data-y="{v:g}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    for t, anchor in ((points[0][0], "start"), (points[-1][0], "end")):
        body.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="{anchor}" '
            f'fill="{MUTED}">{t:%Y-%m-%d %H:%M}</text>'
        )
    return _frame(chart_id, title, body)


def scatter(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float, float]],
    *,
    x_title: str,
    y_title: str,
    empty: str = "no data yet",
) -> Markup:
    """Labelled points on two percentage axes (0 to 100 %), e.g. rate against accuracy."""
    if not points:
        return _empty(chart_id, title, empty)
    body = _y_axis(1.0, percent)
    plot_w = WIDTH - LEFT - RIGHT
    for i in range(5):
        x = LEFT + plot_w * i / 4
        anchor = ("start", "middle", "middle", "middle", "end")[i]
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="{anchor}" '
            f'fill="{MUTED}">{percent(i / 4)}</text>'
        )
    body.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" fill="{INK}">'
        f"{escape(x_title)} →</text>"
        f'<text x="{LEFT + 4}" y="{HEIGHT - BOTTOM - 6}" fill="{INK}">↑ {escape(y_title)}</text>'
    )
    for k, (label, xv, yv) in enumerate(points):
        cx, cy = LEFT + plot_w * min(max(xv, 0.0), 1.0), _y(max(yv, 0.0), 1.0)
        color = PALETTE[k % len(PALETTE)]
        tip = f"{label}: {x_title} {percent(xv)}, {y_title} {percent(yv)}"
        body.append(
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}" '
            f'data-label="{escape(label)}" data-x="{xv:g}" data-y="{yv:g}">'
            f"<title>{escape(tip)}</title></circle>"
            f'<text x="{cx + 8:.1f}" y="{cy + 4:.1f}" fill="{INK}">{escape(label)}</text>'
        )
    return _frame(chart_id, title, body)


def _legend(entries: Sequence[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    x = float(WIDTH - RIGHT)
    for name, color in reversed(entries):
        x -= 24 + 6.6 * len(name)
        out.append(
            f'<rect x="{x:.1f}" y="6" width="10" height="10" fill="{escape(color)}"/>'
            f'<text x="{x + 14:.1f}" y="15" fill="{INK}">{escape(name)}</text>'
        )
    return out


def _short(text: str, room: float) -> str:
    """`text` cut to fit `room` pixels (the full text stays in the mark's title)."""
    keep = max(3, int(room / 6.2))
    return text if len(text) <= keep else text[: keep - 1] + "…"

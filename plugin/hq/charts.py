"""Charts drawn on the server as plain SVG, inlined in the page: nothing is fetched or run when a page is viewed,
and the same SVG goes into the PDF report. Bars (stacked or side by side), horizontal bars for rankings, and lines
with dashed limits; each mark carries a <title>, which browsers show on hover.

Hand-drawn rather than pygal: pygal took 60-90 ms per chart on this 2-core machine (a store page draws eight), these
take about a millisecond, and the pages' budget is 500 ms at p95."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

Series = Mapping[str, Sequence[float | None]]
COLORS = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#d97706",
    "#7c3aed",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#475569",
    "#0d9488",
    "#9333ea",
    "#ea580c",
    "#4f46e5",
    "#be123c",
    "#15803d",
    "#a16207",
)
W, H = 720, 280
LEFT, RIGHT, TOP, AXIS = 52, 14, 30, 34  # plot margins: y labels, right edge, title, x labels
LEGEND_ROW, LEGEND_COLS = 16, 4
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def _nice(top: float) -> tuple[float, float]:
    """An axis maximum and step: 1, 2 or 5 times a power of ten, about five steps."""
    if top <= 0:
        return 1.0, 0.2
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return step * math.ceil(top / step - 1e-9), step


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:,.1f}" if abs(v) >= 1 else f"{v:.2g}"


class _Canvas:
    """The chart's frame: title, legend height, the plot area and its y axis."""

    def __init__(self, title: str, names: Sequence[str], top_value: float, y_title: str = "") -> None:
        rows = math.ceil(len(names) / LEGEND_COLS) if names else 0
        self.height = H + rows * LEGEND_ROW
        self.x0, self.x1 = LEFT, W - RIGHT
        self.y0, self.y1 = TOP, H - AXIS  # plot top and bottom (pixels)
        self.max, self.step = _nice(top_value)
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {self.height}" '
            f'role="img" aria-label="{escape(title)}" {FONT} font-size="11">',
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" fill="#111">{escape(title)}</text>',
        ]
        if y_title:
            self.parts.append(
                f'<text x="12" y="{(self.y0 + self.y1) / 2}" transform="rotate(-90 12 '
                f'{(self.y0 + self.y1) / 2})" text-anchor="middle" fill="#555">{escape(y_title)}</text>'
            )
        self.names = list(names)

    def y(self, v: float) -> float:
        """Pixel row of a value."""
        return self.y1 - (self.y1 - self.y0) * (v / self.max if self.max else 0.0)

    def grid(self) -> None:
        """Horizontal grid lines with their values."""
        v = 0.0
        while v <= self.max + 1e-9:
            y = self.y(v)
            self.parts.append(
                f'<line x1="{self.x0}" x2="{self.x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_num(v)}</text>'
            )
            v += self.step
        self.parts.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{self.y1}" y2="{self.y1}" stroke="#9ca3af"/>')

    def x_labels(self, labels: Sequence[str]) -> None:
        """Category labels under the plot (every n-th when crowded)."""
        n = len(labels)
        if not n:
            return
        every = max(1, math.ceil(n / 24))
        width = (self.x1 - self.x0) / n
        for i, label in enumerate(labels):
            if i % every == 0:
                x = self.x0 + width * (i + 0.5)
                self.parts.append(
                    f'<text x="{x:.1f}" y="{self.y1 + 14}" text-anchor="middle" fill="#555">{escape(label[:10])}</text>'
                )

    def legend(self, dashed: Sequence[str] = ()) -> None:
        """Colour keys under the axis."""
        col_w = (W - LEFT) / LEGEND_COLS
        for i, name in enumerate(self.names):
            x = LEFT + col_w * (i % LEGEND_COLS)
            y = H - 8 + LEGEND_ROW * (i // LEGEND_COLS)
            color = COLORS[i % len(COLORS)]
            mark = (
                f'<line x1="{x:.1f}" x2="{x + 12:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                'stroke-width="2" stroke-dasharray="4 3"/>'
                if name in dashed
                else f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
            )
            self.parts.append(f'{mark}<text x="{x + 16:.1f}" y="{y}" fill="#333">{escape(name[:34])}</text>')

    def done(self, empty: bool) -> Markup:
        """The SVG."""
        if empty:
            self.parts.append(
                f'<text x="{W / 2}" y="{(self.y0 + self.y1) / 2}" text-anchor="middle" fill="#9ca3af">'
                "no data in this period</text>"
            )
        self.parts.append("</svg>")
        return Markup("".join(self.parts))


def bar(title: str, labels: Sequence[str], series: Series, stacked: bool = False, y_title: str = "") -> Markup:
    """A bar chart: one group per label, the series stacked (parts of a whole) or side by side."""
    names = list(series)
    values = [[float(v or 0.0) for v in series[n]] for n in names]
    n = len(labels)
    if stacked:
        top = max((sum(col) for col in zip(*values, strict=True)), default=0.0) if values else 0.0
    else:
        top = max((max(v, default=0.0) for v in values), default=0.0)
    c = _Canvas(title, names, top, y_title)
    c.grid()
    if n:
        group = (c.x1 - c.x0) / n
        inner = group * 0.8
        for i, label in enumerate(labels):
            base = 0.0
            for k, name in enumerate(names):
                v = values[k][i] if i < len(values[k]) else 0.0
                if v <= 0:
                    continue
                if stacked:
                    x, w, y_top, y_bottom = c.x0 + group * i + group * 0.1, inner, c.y(base + v), c.y(base)
                    base += v
                else:
                    w = inner / len(names)
                    x, y_top, y_bottom = c.x0 + group * i + group * 0.1 + w * k, c.y(v), c.y(0)
                c.parts.append(
                    f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{max(w - 1, 1):.1f}" '
                    f'height="{max(y_bottom - y_top, 0.5):.1f}" fill="{COLORS[k % len(COLORS)]}">'
                    f"<title>{escape(label)} {escape(name)}: {_num(v)}</title></rect>"
                )
    c.x_labels(labels)
    c.legend()
    return c.done(top <= 0)


def hbar(title: str, labels: Sequence[str], values: Sequence[float | None], name: str) -> Markup:
    """Horizontal bars, first at the top: a ranking."""
    vals = [float(v or 0.0) for v in values]
    rows = max(len(labels), 1)
    height = TOP + 22 * rows + 24
    top, _ = _nice(max(vals, default=0.0))
    x0, x1 = 170, W - 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {height}" role="img" '
        f'aria-label="{escape(title)}" {FONT} font-size="11">',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" fill="#111">{escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(zip(labels, vals, strict=True)):
        y = TOP + 22 * i
        w = (x1 - x0) * (v / top if top else 0.0)
        parts.append(
            f'<text x="{x0 - 6}" y="{y + 14}" text-anchor="end" fill="#333">{escape(label[:28])}</text>'
            f'<rect x="{x0}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="15" fill="{COLORS[0]}">'
            f"<title>{escape(label)} {escape(name)}: {_num(v)}</title></rect>"
            f'<text x="{x0 + w + 4:.1f}" y="{y + 14}" fill="#333">{_num(v)}</text>'
        )
    if not labels:
        parts.append(
            f'<text x="{W / 2}" y="{TOP + 14}" text-anchor="middle" fill="#9ca3af">no data in this period</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line(
    title: str,
    labels: Sequence[str],
    series: Series,
    limits: Mapping[str, float | None] | None = None,
    y_title: str = "",
) -> Markup:
    """Lines over the labels (a gap where a value is missing); each limit a dashed flat line named after it."""
    drawn = {k: v for k, v in (limits or {}).items() if v is not None}
    names = [*series, *drawn]
    values = [v for s in series.values() for v in s if v is not None]
    top = max([*values, *drawn.values()], default=0.0)
    c = _Canvas(title, names, top, y_title)
    c.grid()
    n = len(labels)
    if n:
        step = (c.x1 - c.x0) / n
        for k, (name, vals) in enumerate(series.items()):
            color = COLORS[k % len(COLORS)]
            run: list[str] = []
            for i, v in enumerate([*vals, None]):
                if v is None:
                    if len(run) > 1:
                        c.parts.append(
                            f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="2"/>'
                        )
                    run = []
                    continue
                x, y = c.x0 + step * (i + 0.5), c.y(float(v))
                run.append(f"{x:.1f},{y:.1f}")
                if n <= 48:
                    c.parts.append(
                        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>'
                        f"{escape(labels[i])} {escape(name)}: {_num(float(v))}</title></circle>"
                    )
        for k, (name, value) in enumerate(drawn.items(), start=len(series)):
            y = c.y(value)
            c.parts.append(
                f'<line x1="{c.x0}" x2="{c.x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLORS[k % len(COLORS)]}" '
                f'stroke-width="2" stroke-dasharray="6 4"><title>{escape(name)}: {_num(value)}</title></line>'
            )
    c.x_labels(labels)
    c.legend(dashed=list(drawn))
    return c.done(not values)

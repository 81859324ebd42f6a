"""Charts rendered on the server as SVG (pygal), inlined in the page: nothing is fetched when a page is viewed, and
the same SVG goes into the PDF report."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pygal
from markupsafe import Markup
from pygal.style import Style

STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#ddd",
    font_family="DejaVu Sans, Helvetica, Arial, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=11,
    title_font_size=13,
    colors=("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569"),
)
_COMMON = {
    "js": [],
    "disable_xml_declaration": True,
    "style": STYLE,
    "width": 720,
    "height": 280,
    "explicit_size": False,
    "legend_at_bottom": True,
    "legend_at_bottom_columns": 4,
    "print_values": False,
    "truncate_legend": 30,
    "margin": 8,
    "margin_bottom": 28,  # room for the legend under rotated labels (pygal does not count it)
    "show_minor_x_labels": True,
}

Series = Mapping[str, Sequence[float | None]]
# pygal always writes its tooltip config as an inline <script>: the pages run no script (a strict CSP), so drop it
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    return Markup(_SCRIPT.sub("", chart.render(is_unicode=True)))


def _labels(chart: pygal.graph.graph.Graph, labels: Sequence[str]) -> None:
    chart.x_labels = list(labels)
    if len(labels) > 24:  # long axes: every n-th label, the rest as minor ticks
        step = max(1, len(labels) // 12)
        chart.x_labels_major = list(labels)[::step]
        chart.show_minor_x_labels = False
        chart.x_label_rotation = 30


def bar(title: str, labels: Sequence[str], series: Series, stacked: bool = False, y_title: str = "") -> Markup:
    """A bar chart (stacked when the series add up to a whole)."""
    chart = (pygal.StackedBar if stacked else pygal.Bar)(title=title, y_title=y_title, **_COMMON)
    _labels(chart, labels)
    for name, values in series.items():
        chart.add(name, list(values))
    if not series:
        chart.add("no data", [])
    return _svg(chart)


def hbar(title: str, labels: Sequence[str], values: Sequence[float | None], name: str) -> Markup:
    """Horizontal bars: a ranking."""
    chart = pygal.HorizontalBar(title=title, show_legend=False, **_COMMON)
    chart.x_labels = list(reversed(labels))  # pygal draws the first at the bottom: the top of a ranking goes last
    chart.add(name, list(reversed(values)))
    return _svg(chart)


def line(
    title: str,
    labels: Sequence[str],
    series: Series,
    limits: Mapping[str, float | None] | None = None,
    y_title: str = "",
) -> Markup:
    """Lines over time; each limit is drawn as a dashed flat line named after it."""
    chart = pygal.Line(
        title=title,
        y_title=y_title,
        show_dots=len(labels) <= 48,
        allow_interruptions=True,
        include_x_axis=True,
        **_COMMON,
    )
    _labels(chart, labels)
    for name, values in series.items():
        chart.add(name, list(values))
    for name, value in (limits or {}).items():
        if value is not None:
            chart.add(name, [value] * len(labels), stroke_style={"dasharray": "6, 4", "width": 2}, show_dots=False)
    if not series:
        chart.add("no data", [])
    return _svg(chart)

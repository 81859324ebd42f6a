"""A dashboard's figures as tables: each chart has one beside it, and each table downloads as CSV (the same rows)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web


@dataclass
class Table:
    """Named rows with their column titles, and how the figures were computed."""

    name: str  # the CSV's name: [a-z0-9_]+
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def csv(self) -> str:
        """The rows as CSV text, with the column titles first."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        writer.writerows([[_plain(v) for v in row] for row in self.rows])
        return out.getvalue()


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, datetime | date):
        return v.isoformat()
    return "" if v is None else v


def csv_response(tables: list[Table], name: str, prefix: str) -> web.Response:
    """The named table as a CSV download, 404 when the page has none by that name."""
    for t in tables:
        if t.name == name:
            filename = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{prefix}-{name}.csv")
            return web.Response(
                text=t.csv(),
                content_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )
    raise web.HTTPNotFound(text=f"no table {name!r} on this page")


@dataclass(frozen=True)
class Period:
    """Whole days [start, end), the store's own days for day counts, UTC for hourly rows."""

    start: date
    end: date

    @property
    def days(self) -> int:
        """How many days."""
        return (self.end - self.start).days

    def query(self) -> str:
        """The period as query parameters."""
        return f"from={self.start.isoformat()}&to={self.end.isoformat()}"


def period_from(request: web.Request, default_days: int = 28, today: date | None = None) -> Period:
    """?from=YYYY-MM-DD&to=YYYY-MM-DD (to exclusive), or ?days=N ending today; 400 naming the bad parameter."""
    q = request.query
    try:
        if "from" in q or "to" in q:
            start = date.fromisoformat(q["from"])
            end = date.fromisoformat(q["to"])
        else:
            days = int(q.get("days", default_days))
            end = (today or datetime.now().date()) + timedelta(days=1)
            start = end - timedelta(days=days)
    except KeyError as exc:
        raise web.HTTPBadRequest(text=f"{exc.args[0]}: needed with from/to") from None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"period: {exc}") from None
    if not timedelta(days=1) <= end - start <= timedelta(days=400):
        raise web.HTTPBadRequest(text="period: from must be before to, and at most 400 days apart")
    return Period(start, end)

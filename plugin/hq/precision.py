"""Precision from feedback: of the incidents people judged confirmed or false alarm (the latest verdict each; unsure
left out), the share confirmed, per rule, per store and per camera; and around each change of a rule's settings,
the precision and the incident rate in the weeks before and after it, so a threshold change shows its effect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from plugin.hq.chain import utc_bounds
from plugin.hq.db import HqDatabase
from plugin.hq.tables import Period, Table

NOTE = (
    "precision: confirmed / (confirmed + false alarm), the latest verdict per incident, unsure left out; "
    "judged: incidents with such a verdict; by the store day the incident started"
)
COMPARE_WEEKS = 4


def _p(confirmed: int, judged: int) -> float | None:
    return None if not judged else confirmed / judged


async def precision_tables(db: HqDatabase, stores: list[str], period: Period) -> list[Table]:
    """Precision by rule, by store and by camera (store and camera together) over the period."""
    out = []
    for name, title, cols in (
        ("precision_by_rule", "Precision by rule", ["type", "rule_id"]),
        ("precision_by_store", "Precision by store", ["store_id"]),
        ("precision_by_camera", "Precision by store and camera", ["store_id", "camera"]),
    ):
        group = ", ".join(cols)
        rows = await db.fetch(
            f"""SELECT {group}, sum(confirmed) AS confirmed, sum(false_alarm) AS false_alarms, sum(unsure) AS unsure
                FROM verdict_days WHERE day >= $1 AND day < $2 AND store_id = ANY($3)
                GROUP BY {group}""",
            period.start,
            period.end,
            stores,
        )
        t = Table(
            name,
            title,
            [*(c.replace("_id", "") for c in cols), "judged", "confirmed", "false alarms", "unsure", "precision"],
        )
        for r in rows:
            judged = int(r["confirmed"]) + int(r["false_alarms"])
            t.rows.append(
                [
                    *(r[c] for c in cols),
                    judged,
                    int(r["confirmed"]),
                    int(r["false_alarms"]),
                    int(r["unsure"]),
                    _p(int(r["confirmed"]), judged),
                ]
            )
        # the least precise first: what needs a threshold changed
        t.rows.sort(key=lambda row: (row[-1] if row[-1] is not None else 2.0, -row[len(cols)]))
        t.note = NOTE
        out.append(t)
    return out


async def weekly_precision(db: HqDatabase, stores: list[str], period: Period) -> Table:
    """Precision per week and incident type over the visible stores."""
    rows = await db.fetch(
        """SELECT date_trunc('week', day)::date AS week, type, sum(confirmed) AS confirmed,
                  sum(false_alarm) AS false_alarms
           FROM verdict_days WHERE day >= $1 AND day < $2 AND store_id = ANY($3)
           GROUP BY 1, 2 ORDER BY 1, 2""",
        period.start,
        period.end,
        stores,
    )
    t = Table("precision_by_week", "Precision by week and type", ["week", "type", "judged", "precision"])
    for r in rows:
        judged = int(r["confirmed"]) + int(r["false_alarms"])
        t.rows.append([r["week"], r["type"], judged, _p(int(r["confirmed"]), judged)])
    t.note = NOTE + "; weeks start on Monday (the stores' own days)"
    return t


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    if before is None:
        return "first seen"
    keys = sorted(set(before) | set(after))
    return ", ".join(f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k))


async def threshold_changes(db: HqDatabase, stores: list[str], period: Period) -> Table:
    """Each change of a rule's settings in the period, with precision and incidents per week in the COMPARE_WEEKS
    weeks before and after it."""
    t0, t1 = utc_bounds(period)
    changes = await db.fetch(
        """SELECT v.store_id, v.rule_id, v.since, v.config,
                  (SELECT p.config FROM rule_versions p WHERE p.store_id = v.store_id AND p.rule_id = v.rule_id
                   AND p.since < v.since ORDER BY p.since DESC LIMIT 1) AS previous
           FROM rule_versions v WHERE v.since >= $1 AND v.since < $2 AND v.store_id = ANY($3)
           ORDER BY v.since, v.store_id, v.rule_id""",
        t0,
        t1,
        stores,
    )
    t = Table(
        "threshold_changes",
        "Rule setting changes and their effect",
        [
            "store",
            "rule",
            "changed at",
            "change",
            "precision before",
            "precision after",
            "incidents/week before",
            "incidents/week after",
            "judged before",
            "judged after",
        ],
    )
    window = timedelta(weeks=COMPARE_WEEKS)
    now = datetime.now(UTC)
    for c in changes:
        if c["previous"] is None:
            continue  # the rule's first report is not a change
        figures = []
        # the weeks after a recent change are not over yet: the rate counts the time there was
        for a, b in ((c["since"] - window, c["since"]), (c["since"], min(c["since"] + window, now))):
            r = await db.pool.fetchrow(
                """SELECT count(*) FILTER (WHERE verdict = 'confirmed') AS confirmed,
                          count(*) FILTER (WHERE verdict = 'false_alarm') AS false_alarms
                   FROM verdicts WHERE store_id = $1 AND rule_id = $2 AND incident_start >= $3
                   AND incident_start < $4""",
                c["store_id"],
                c["rule_id"],
                a,
                b,
            )
            n = await db.pool.fetchval(
                "SELECT count(*) FROM incidents WHERE store_id = $1 AND rule_id = $2 AND start_at >= $3 "
                "AND start_at < $4",
                c["store_id"],
                c["rule_id"],
                a,
                b,
            )
            assert r is not None
            judged = int(r["confirmed"]) + int(r["false_alarms"])
            weeks = max((b - a) / timedelta(weeks=1), 1 / 7)
            figures.append((_p(int(r["confirmed"]), judged), int(n) / weeks, judged))
        (p0, n0, j0), (p1, n1, j1) = figures
        t.rows.append(
            [c["store_id"], c["rule_id"], c["since"], _diff(c["previous"], c["config"]), p0, p1, n0, n1, j0, j1]
        )
    t.note = (
        f"the {COMPARE_WEEKS} weeks before and after each change the store reported (its hourly roll-up "
        "carries every rule's settings); " + NOTE
    )
    return t

"""Loss-prevention exception rules on normalised POS transactions: pure and synchronous (the operator frequency
rule keeps a rolling window per operator), fed in any order (a POSLog batch can arrive late)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from plugin.config.pos import OperatorCategory, PosConfig
from plugin.fusion.pos.model import Transaction

# Exceptions the rules raise, each a BusinessEvent kind `pos.<name>`; the fused ones (video) come from pos_fusion.
EXCEPTIONS = (
    "line_void",
    "txn_void",
    "post_void",
    "refund_no_receipt",
    "no_sale",
    "price_override",
    "employee_discount",
    "operator_frequency",
)


@dataclass(frozen=True)
class PosException:
    """One exception found in one transaction."""

    name: str  # one of EXCEPTIONS
    at: datetime  # the moment it happened (a line's time when known, else the transaction's end)
    amount: float  # what it was worth (0 when it moves no money: a no-sale)
    reason: str  # a short phrase for people: "2 voided lines worth 84.50 (threshold 20.00)"
    facts: dict[str, Any] = field(default_factory=dict)  # JSON-ready details

    @property
    def kind(self) -> str:
        """The BusinessEvent kind."""
        return f"pos.{self.name}"


def categories(txn: Transaction) -> set[OperatorCategory]:
    """What a transaction counts as, for operator frequency."""
    cats: set[OperatorCategory] = set()
    if txn.type == "return" or txn.returns:
        cats.add("return")
    if txn.type in ("post_void", "void", "no_sale"):
        cats.add(txn.type)
    if txn.voided_lines:
        cats.add("line_void")
    if txn.type == "price_override" or any(ln.price_override and not ln.voided for ln in txn.lines):
        cats.add("price_override")
    if txn.type == "employee_discount" or any(ln.employee_discount and not ln.voided for ln in txn.lines):
        cats.add("employee_discount")
    return cats


def _m(v: float) -> str:
    return f"{v:.2f}"


class PosExceptionRules:
    """Finds the exceptions of each transaction; one instance per process (it keeps operator windows)."""

    def __init__(self, config: PosConfig) -> None:
        self.config = config
        self._times: dict[tuple[str, str], list[datetime]] = {}
        self._quiet_until: dict[tuple[str, str], datetime] = {}

    def check(self, txn: Transaction) -> list[PosException]:
        """The exceptions of `txn` (already masked and on the NVR clock)."""
        th = self.config.thresholds
        out: list[PosException] = []
        voided = [ln for ln in txn.voided_lines if abs(ln.amount) >= th.line_void_min_amount]
        if voided and txn.type != "void":
            worth = round(sum(abs(ln.amount) for ln in voided), 2)
            at = max((ln.time for ln in voided if ln.time is not None), default=txn.end)
            out.append(
                PosException(
                    "line_void", at, worth,
                    f"{len(voided)} voided line(s) worth {_m(worth)} (threshold {_m(th.line_void_min_amount)})",
                    {"lines": [ln.seq for ln in voided], "items": [ln.description or ln.item_id for ln in voided]},
                )
            )  # fmt: skip
        if txn.type == "void":
            worth = round(sum(abs(ln.amount) for ln in txn.lines), 2)
            if worth >= th.line_void_min_amount:
                out.append(PosException("txn_void", txn.end, worth, f"transaction cancelled with {_m(worth)} rung"))
        if txn.type == "post_void":
            link = f" of transaction {txn.link.id}" if txn.link else " (original not named)"
            out.append(
                PosException(
                    "post_void", txn.end, abs(txn.amount), f"post-void{link}", {"original": txn.link and txn.link.id}
                )
            )
        out.extend(self._refund(txn))
        if txn.type == "no_sale":
            out.append(PosException("no_sale", txn.end, 0.0, "drawer opened without a sale"))
        out.extend(self._overrides(txn))
        out.extend(self._employee_discounts(txn))
        out.extend(self._frequency(txn))
        return out

    def _refund(self, txn: Transaction) -> list[PosException]:
        th = self.config.thresholds
        if txn.link is not None:
            return []  # a transaction-level link is the receipt for all its returns
        unlinked = [ln for ln in txn.returns if not ln.linked]
        if not unlinked and not (txn.type == "return" and not txn.returns):
            return []
        worth = round(sum(ln.amount for ln in unlinked), 2) if unlinked else abs(txn.amount)
        if worth < th.refund_no_receipt_min_amount:
            return []
        tender = ", ".join(sorted({t.type for t in txn.tenders})) or "unknown tender"
        return [
            PosException(
                "refund_no_receipt", txn.end, worth, f"refund of {_m(worth)} without a receipt ({tender})",
                {"tenders": sorted({t.type for t in txn.tenders}), "lines": [ln.seq for ln in unlinked]},
            )
        ]  # fmt: skip

    def _overrides(self, txn: Transaction) -> list[PosException]:
        th = self.config.thresholds
        lines = [
            ln
            for ln in txn.lines
            if ln.price_override and not ln.voided and ln.override_percent >= th.price_override_min_percent
        ]
        if not lines and txn.type != "price_override":
            return []
        if not lines:
            return [PosException("price_override", txn.end, 0.0, "price override")]
        cut = round(sum(((ln.regular_price or 0) - (ln.unit_price or 0)) * abs(ln.quantity) for ln in lines), 2)
        pct = max(ln.override_percent for ln in lines)
        at = max((ln.time for ln in lines if ln.time is not None), default=txn.end)
        why = sorted({ln.override_reason for ln in lines if ln.override_reason})
        return [
            PosException(
                "price_override", at, max(cut, 0.0),
                f"{len(lines)} price override(s), up to {pct:.0f}% off" + (f" ({', '.join(why)})" if why else ""),
                {"lines": [ln.seq for ln in lines], "max_percent": round(pct, 1)},
            )
        ]  # fmt: skip

    def _employee_discounts(self, txn: Transaction) -> list[PosException]:
        policy = self.config.employee_discount
        problems: list[str] = []
        worth = 0.0
        for ln in txn.lines:
            if ln.voided or not ln.employee_discount:
                continue
            why = []
            if ln.employee_discount_percent > policy.max_percent + 1e-6:
                why.append(f"{ln.employee_discount_percent:.0f}% off (policy {policy.max_percent:g}%)")
            if ln.employee_id is None and policy.require_employee_id:
                why.append("no employee id")
            if not policy.allow_self and ln.employee_id is not None and ln.employee_id == txn.operator:
                why.append(f"operator {txn.operator} discounted their own purchase")
            if why:
                problems.extend(why)
                worth += ln.employee_discount
        if not problems:
            return []
        reason = "employee discount outside policy: " + "; ".join(dict.fromkeys(problems))
        return [PosException("employee_discount", txn.end, round(worth, 2), reason)]

    def _frequency(self, txn: Transaction) -> list[PosException]:
        limits = self.config.operator_limits
        if txn.operator is None:
            return []
        window = timedelta(seconds=limits.window_s)
        out = []
        for cat in sorted(categories(txn)):
            key = (txn.operator, cat)
            times = self._times.setdefault(key, [])
            bisect.insort(times, txn.end)
            horizon = max(times) - window - window  # keep two windows: late arrivals still count against earlier
            del times[: bisect.bisect_left(times, horizon)]
            limit = limits.max.get(cat)
            if limit is None:
                continue
            n = bisect.bisect_right(times, txn.end) - bisect.bisect_left(times, txn.end - window)
            if n > limit and txn.end >= self._quiet_until.get(key, txn.end - window):
                # once per window: the next alarm for this operator and category needs a fresh window's worth
                self._quiet_until[key] = txn.end + window
                label = cat.replace("_", " ")
                out.append(
                    PosException(
                        "operator_frequency", txn.end, 0.0,
                        f"operator {txn.operator}: {n} {label}(s) within {limits.window_s / 60:g} min (limit {limit})",
                        {"operator": txn.operator, "category": cat, "count": n, "limit": limit},
                    )
                )  # fmt: skip
        return out

    def seed(self, history: Iterable[Transaction]) -> None:
        """Replay stored transactions (after a restart) into the operator windows, raising nothing."""
        for txn in history:
            self._frequency(txn)

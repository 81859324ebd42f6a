"""POS transactions as the bridge knows them, whatever carried them (POSLog XML, receipt text, JSON webhooks): the
normalised model (pure: adapters use it), masked at construction, the receipt text StoreSight writes for people and
for XProtect Transact, and what the POS adapters hand transactions to.

Card numbers never get past the constructor: every string of a transaction (descriptions, receipt lines, tender
references, ids) goes through `mask_pans` in a before-validator, so nothing built from this model can store, log
or forward a full PAN (PCI DSS). The JSON webhook accepts this model as its schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from plugin.config.pos import PosConfig
from plugin.protocols import SubmitResult
from plugin.redact import mask_pans, mask_pans_deep

TxnType = Literal["sale", "return", "void", "no_sale", "post_void", "price_override", "employee_discount"]
TXN_TYPES: tuple[str, ...] = TxnType.__args__  # type: ignore[attr-defined]
TRANSACTION_KIND = "pos.transaction"  # the BusinessEvent kind of a whole transaction; exceptions are pos.<name>


def _text(v: Any) -> Any:
    # POS ids are often numbers in JSON; they are names here (leading zeros matter: "0042")
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


MOMENT_MIN = datetime(1970, 1, 1, tzinfo=UTC)
MOMENT_MAX = datetime(3000, 1, 1, tzinfo=UTC)


def plausible_time(t: datetime) -> datetime:
    """`t` when it lies in 1970-2999: a sender's clock is only its word, and every later step (UTC for storage, the
    windows around it, a lane's clock offset) must be able to compute with it; outside, a clear error here rather
    than an overflow further on (9999-12-31T23:59-23:59 is past the calendar's end in UTC)."""
    # the year first: at the ends of the calendar the conversion itself overflows
    if not MOMENT_MIN.year <= t.year < MOMENT_MAX.year or not MOMENT_MIN <= t.astimezone(UTC) < MOMENT_MAX:
        raise ValueError(f"{t.isoformat()} is outside {MOMENT_MIN.year}-{MOMENT_MAX.year - 1} (a clock fault?)")
    return t


Moment = Annotated[AwareDatetime, AfterValidator(plausible_time)]
Id = Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=64)]
Money = Annotated[float, Field(allow_inf_nan=False, ge=-10_000_000, le=10_000_000)]


class _Masked(BaseModel):
    """Frozen, strict, and masked before validation: a PAN in any string is gone before the model exists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _mask(cls, data: Any) -> Any:
        return mask_pans_deep(data)


class PosLine(_Masked):
    """One item line: a sale or a return, possibly voided, overridden or discounted."""

    seq: int | None = Field(default=None, description="the line's sequence number in the transaction")
    kind: Literal["sale", "return"] = "sale"
    item_id: str | None = Field(default=None, max_length=64)
    description: str = Field(default="", max_length=200)
    quantity: float = Field(default=1.0, allow_inf_nan=False)
    unit_price: Money | None = Field(default=None, description="what was charged per unit")
    regular_price: Money | None = Field(default=None, description="the price list's unit price")
    amount: Money = Field(description="the line's extended amount, positive for sales and refunds alike")
    voided: bool = False
    time: Moment | None = Field(default=None, description="when the line was rung (or voided)")
    price_override: bool = Field(default=False, description="the operator changed the price")
    override_reason: str | None = Field(default=None, max_length=64)
    discount: Money = Field(default=0.0, ge=0, description="all discounts on the line")
    employee_discount: Money = Field(default=0.0, ge=0, description="the employee discount part of `discount`")
    employee_id: str | None = Field(default=None, max_length=64, description="whose employee discount it is")
    linked: bool = Field(default=False, description="a return carrying a link to its original sale (a receipt)")

    @property
    def override_percent(self) -> float:
        """How much the override took off the regular price, in percent (0 when not known)."""
        if not self.price_override or not self.regular_price or self.unit_price is None:
            return 0.0
        return max(0.0, (self.regular_price - self.unit_price) / self.regular_price * 100.0)

    @property
    def employee_discount_percent(self) -> float:
        """The employee discount as a share of the line before discounts, in percent."""
        base = self.amount + self.discount
        if self.regular_price is not None and self.regular_price > 0:
            base = max(base, self.regular_price * abs(self.quantity))
        return 0.0 if base <= 0 else self.employee_discount / base * 100.0


class PosTender(_Masked):
    """How it was paid (or refunded)."""

    type: str = Field(min_length=1, max_length=32, description="cash, credit, debit, gift_card, store_credit, ...")
    amount: Money
    card: str | None = Field(default=None, max_length=32, description="the card number as printed: masked")
    change: Money = 0.0


class PosLink(_Masked):
    """The original transaction a return or post-void refers to."""

    id: Id
    lane: Id | None = None
    store: Id | None = None
    business_day: str | None = Field(default=None, max_length=10)
    reason: str | None = Field(default=None, max_length=64)


class Transaction(_Masked):
    """A normalised POS transaction."""

    id: Id = Field(description="the register's transaction (sequence) number")
    lane: Id = Field(description="the register (POSLog WorkstationID)")
    store: Id | None = None
    business_day: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD as the POS counts days")
    type: TxnType = "sale"
    begin: Moment | None = None
    end: Moment
    operator: Id | None = None
    operator_name: str | None = Field(default=None, max_length=64)
    currency: str | None = Field(default=None, max_length=8)
    lines: tuple[PosLine, ...] = Field(default=(), max_length=2000)
    tenders: tuple[PosTender, ...] = Field(default=(), max_length=100)
    total: Money | None = None
    link: PosLink | None = None
    receipt: tuple[Annotated[str, Field(max_length=400)], ...] = Field(
        default=(), max_length=2000, description="the lines the register printed, when it sent text"
    )

    @model_validator(mode="after")
    def _times_in_order(self) -> Transaction:
        if self.begin is not None and self.begin > self.end:
            raise ValueError("begin is after end")
        return self

    @property
    def key(self) -> str:
        """The dedupe key: the same transaction sent twice (a retried POST, a re-dropped file) is taken once."""
        day = self.business_day or self.end.date().isoformat()
        return f"pos:{self.store or '-'}:{self.lane}:{day}:{self.id}"

    @property
    def returns(self) -> list[PosLine]:
        """Return lines that were not voided."""
        return [ln for ln in self.lines if ln.kind == "return" and not ln.voided]

    @property
    def voided_lines(self) -> list[PosLine]:
        """Voided lines."""
        return [ln for ln in self.lines if ln.voided]

    @property
    def amount(self) -> float:
        """What changed hands: the total when the POS gave one, else the live lines (returns negative)."""
        if self.total is not None:
            return self.total
        return round(sum(-ln.amount if ln.kind == "return" else ln.amount for ln in self.lines if not ln.voided), 2)

    def window(self, assumed_duration_s: float) -> tuple[datetime, datetime]:
        """[begin, end]; a POS that gives only the end time gets `assumed_duration_s` before it."""
        begin = self.begin or self.end - timedelta(seconds=assumed_duration_s)
        return begin, self.end

    def shifted(self, offset_s: float) -> Transaction:
        """The same transaction on the NVR's clock (a lane's clock_offset_s added to every time)."""
        if not offset_s:
            return self
        delta = timedelta(seconds=offset_s)
        doc = self.model_dump()
        doc["end"] = self.end + delta
        doc["begin"] = None if self.begin is None else self.begin + delta
        doc["lines"] = [{**ln, "time": None if ln["time"] is None else ln["time"] + delta} for ln in doc["lines"]]
        return Transaction.model_validate(doc)

    def payload(self) -> dict[str, Any]:
        """The JSON-ready BusinessEvent payload."""
        return self.model_dump(mode="json")


def _money(v: float) -> str:
    return f"{v:.2f}"


def _label(text: str | None) -> str:
    return " ".join((text or "").split())


def render_receipt(txn: Transaction, tz: ZoneInfo) -> list[str]:
    """Normalised receipt text, one line per item, with stable keywords (`*** VOID ***`, `NO SALE`,
    `REFUND NO RCPT`, `POST VOID`, `PRICE OVERRIDE`, `EMPLOYEE DISCOUNT`) so one XProtect Transact definition and
    its events work for every register; the default receipt-text patterns read it back."""
    when = txn.end.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    head = f"TXN {txn.id} LANE {txn.lane}" + (f" OP {txn.operator}" if txn.operator else "") + f" {when}"
    out = [head]
    if txn.type == "no_sale":
        out.append("NO SALE")
    if txn.type == "post_void":
        out.append("POST VOID" + (f" OF TXN {txn.link.id}" if txn.link else ""))
    if txn.type == "void":
        out.append("TRANSACTION CANCELLED")
    for ln in txn.lines:
        item = " ".join(p for p in (_label(ln.item_id), _label(ln.description)) if p) or "item"
        qty = f" {ln.quantity:g} @ {_money(ln.unit_price)}" if ln.unit_price is not None and ln.quantity != 1 else ""
        if ln.voided:
            out.append(f"*** VOID *** {item}{qty} {_money(ln.amount)}")
        elif ln.kind == "return":
            # a receipt whose number the POS did not pass on still makes the return linked
            how = (" ORIG " + (txn.link.id if txn.link else "UNKNOWN")) if ln.linked else " REFUND NO RCPT"
            out.append(f"RETURN {item}{qty}{how} {_money(ln.amount)}")
        else:
            out.append(f"SALE {item}{qty} {_money(ln.amount)}")
        if ln.price_override and ln.regular_price is not None and ln.unit_price is not None:
            why = f" ({_label(ln.override_reason)})" if ln.override_reason else ""
            out.append(f"PRICE OVERRIDE {item} {_money(ln.regular_price)} -> {_money(ln.unit_price)}{why}")
        elif ln.price_override:
            out.append(f"PRICE OVERRIDE {item}")
        if ln.employee_discount:
            emp = f" EMP {ln.employee_id}" if ln.employee_id else ""
            out.append(f"EMPLOYEE DISCOUNT {item} {_money(ln.employee_discount)}{emp}")
    if txn.type in ("sale", "return", "void") or txn.total is not None:
        out.append(f"TOTAL {_money(txn.amount)}")
    for t in txn.tenders:
        card = f" {t.card}" if t.card else ""
        change = f" CHANGE {_money(t.change)}" if t.change else ""
        out.append(f"TENDER {_label(t.type).upper().replace(' ', '_')}{card} {_money(t.amount)}{change}")
    out.append(f"END TXN {txn.id}")
    return [mask_pans(line) for line in out]


def receipt_summary(lines: Sequence[str], max_chars: int = 900) -> str:
    """The receipt on one line for an explanation (VMS descriptions, overlays), cut to `max_chars`."""
    text = " | ".join(lines)
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 20].rsplit(" | ", 1)[0]
    return f"{cut} | ... ({len(lines)} lines)"


ReceiptListener = Callable[[Transaction, list[str]], None]


class TransactionIntake(Protocol):
    """What the POS adapters hand normalised transactions to (the POS service): stored before `submit` returns."""

    config: PosConfig
    tz: ZoneInfo  # the store's (or the POS's) local time, for receipts that carry no offset
    listeners: list[ReceiptListener]  # told of each stored transaction with its normalised receipt (Transact feeds)

    async def submit(self, txn: Transaction, source: str, origin: str | None = None) -> SubmitResult:
        """Store one transaction (returns after it is committed: acknowledge the sender then). `origin` names what
        sent it when the transport does not vouch for its id (receipt text over TCP): it joins the dedupe key, so a
        transaction sent from elsewhere with the same id is kept beside the real one, never in its place."""
        ...

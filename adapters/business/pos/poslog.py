"""NRF ARTS POSLog XML (INTEGRATIONS.md section 7.1): safe parsing, mapping to normalised transactions, the drop
folder and `POST /api/pos/poslog`.

Hostile documents are refused before anything is built from them: over `pos.max_document_bytes`, nested deeper
than `pos.max_xml_depth`, or carrying a DTD at all (defusedxml on expat: no entity expansion, no external entities,
no network; POSLog is schema-described and never needs a DTD). A well-formed document is taken transaction by
transaction: a bad one is reported and the good ones still go through.

Elements are matched by local name, so the ARTS namespace (http://www.nrf-arts.org/IXRetail/namespace/), no
namespace and vendor prefixes all read the same. Inferred, to confirm on real feeds: post-voids appear as a
TransactionLink with ReasonCode PostVoid (or RetailTransaction@TransactionStatus PostVoided), an employee discount
as a RetailPriceModifier whose ReasonCode or PromotionID the config names, with the employee in its EmployeeID.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import io
import logging
import os
import re
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import defusedxml
import defusedxml.ElementTree as DET
from aiohttp import web
from pydantic import ValidationError

from adapters.business.pos import read_body
from plugin.config.pos import PosConfig, PosFileDropConfig
from plugin.fusion.pos.model import PosLine, PosLink, PosTender, Transaction, TransactionIntake, TxnType
from plugin.private import write_private
from plugin.redact import mask_pans

log = logging.getLogger(__name__)

SOURCE = "pos.poslog"
NAMESPACE = "http://www.nrf-arts.org/IXRetail/namespace/"
_TRUE = {"true", "1", "yes"}
# UTF-32 first: its little-endian BOM starts with UTF-16's
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip


class DocumentRejected(ValueError):
    """The whole document is refused (hostile, malformed or not POSLog); the reason says why."""


@dataclass
class ParseResult:
    """What a document held."""

    transactions: list[Transaction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per transaction that could not be taken
    skipped: int = 0  # transactions with nothing for loss prevention (sign-on, training mode, ...)


def _local(tag: object) -> str:
    name = tag if isinstance(tag, str) else ""
    return name.rsplit("}", 1)[-1]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    return next((c for c in el if _local(c.tag) == name), None)


def _children(el: ET.Element | None, name: str) -> Iterator[ET.Element]:
    return iter(()) if el is None else (c for c in el if _local(c.tag) == name)


def _text(el: ET.Element | None, *path: str) -> str | None:
    for name in path:
        el = _child(el, name)
    if el is None or el.text is None:
        return None
    text = el.text.strip()
    return text or None


def _flag(el: ET.Element | None, attr: str) -> bool:
    return el is not None and (el.get(attr) or "").strip().lower() in _TRUE


def _number(el: ET.Element | None, *path: str) -> float | None:
    text = _text(el, *path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{'/'.join(path)} is not a number") from None


def _time(text: str | None, tz: ZoneInfo, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} is not an ISO 8601 time") from None
    return t.replace(tzinfo=tz) if t.tzinfo is None else t  # POSLog times are usually the store's local time


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip()).lower() or "unknown"


def safe_parse(data: bytes, max_bytes: int, max_depth: int) -> ET.Element:
    """The document's root element, or DocumentRejected with the reason."""
    if len(data) > max_bytes:
        raise DocumentRejected(f"document is {len(data)} bytes, over the limit of {max_bytes} (pos.max_document_bytes)")
    depth = 0
    root: ET.Element | None = None
    try:
        for event, el in DET.iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True):
            if event == "start":
                root = el if root is None else root
                depth += 1
                if depth > max_depth:
                    raise DocumentRejected(f"elements nested deeper than {max_depth} (pos.max_xml_depth)")
            else:
                depth -= 1
    except defusedxml.DTDForbidden:
        raise DocumentRejected(
            "document has a DTD (<!DOCTYPE>): refused, POSLog needs none and DTDs carry entity-expansion and "
            "external-entity attacks"
        ) from None
    except defusedxml.EntitiesForbidden:
        raise DocumentRejected("document declares entities: refused (entity expansion)") from None
    except defusedxml.ExternalReferenceForbidden:
        raise DocumentRejected("document refers to an external entity: refused (no network, no local files)") from None
    except ET.ParseError as exc:
        raise DocumentRejected(f"not well-formed XML: {exc}") from None
    except LookupError as exc:  # the XML declaration names an encoding Python does not know
        raise DocumentRejected(f"the XML declaration's encoding is unknown: {exc}") from None
    if root is None:
        raise DocumentRejected("empty document")
    return root


class PosLogReader:
    """Maps POSLog to normalised transactions, with the config's reason codes and time zone."""

    def __init__(self, config: PosConfig, tz: ZoneInfo) -> None:
        self.config = config
        self.tz = tz
        self.override_codes = {c.lower() for c in config.thresholds.override_reason_codes}
        self.employee_codes = {c.lower() for c in config.employee_discount.reason_codes}
        self.employee_promotions = {c.lower() for c in config.employee_discount.promotion_ids}

    def parse(self, data: bytes) -> ParseResult:
        """Every transaction of a document (CPU-bound: run it in a thread)."""
        root = safe_parse(data, self.config.max_document_bytes, self.config.max_xml_depth)
        name = _local(root.tag)
        if name == "Transaction":
            elements = [root]
        elif name == "POSLog":
            elements = list(_children(root, "Transaction"))
        else:
            raise DocumentRejected(f"root element is <{name}>, not <POSLog> or <Transaction>")
        result = ParseResult()
        for i, el in enumerate(elements):
            where = f"Transaction[{i}] (WorkstationID {_text(el, 'WorkstationID')}, " \
                    f"SequenceNumber {_text(el, 'SequenceNumber')})"  # fmt: skip
            try:
                txn = self.transaction(el)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'transaction'}: {e['msg']}" for e in exc.errors()
                )
                result.errors.append(mask_pans(f"{where}: {problems}"))
                continue
            except ValueError as exc:
                result.errors.append(mask_pans(f"{where}: {exc}"))
                continue
            if txn is None:
                result.skipped += 1
            else:
                result.transactions.append(txn)
        return result

    def transaction(self, el: ET.Element) -> Transaction | None:
        """One Transaction element; None for those loss prevention does not look at."""
        if _flag(el, "TrainingModeFlag"):
            return None
        retail, control = _child(el, "RetailTransaction"), _child(el, "ControlTransaction")
        lane, seq = _text(el, "WorkstationID"), _text(el, "SequenceNumber")
        if lane is None or seq is None:
            raise ValueError("WorkstationID and SequenceNumber are required")
        end = _time(_text(el, "EndDateTime") or _text(retail, "ReceiptDateTime"), self.tz, "EndDateTime")
        if end is None:
            raise ValueError("EndDateTime is missing")
        operator = _child(el, "OperatorID")
        doc: dict[str, Any] = {
            "id": seq, "lane": lane, "store": _text(el, "RetailStoreID"),
            "business_day": (_text(el, "BusinessDayDate") or "")[:10] or None,
            "begin": _time(_text(el, "BeginDateTime"), self.tz, "BeginDateTime"), "end": end,
            "operator": _text(el, "OperatorID"),
            "operator_name": None if operator is None else operator.get("OperatorName"),
            "currency": _text(el, "CurrencyCode"),
        }  # fmt: skip
        if control is not None:
            if _child(control, "NoSale") is None:
                return None  # sign-on/off, price look-up, ...: nothing to judge
            return Transaction.model_validate({**doc, "type": "no_sale"})
        if retail is None:
            return None  # tender control, store control, ...
        lines, tenders = [], []
        for item in _children(retail, "LineItem"):
            line = self.line(item)
            if line is not None:
                lines.append(line)
            tender = self.tender(item)
            if tender is not None:
                tenders.append(tender)
        link = self.link(_child(retail, "TransactionLink"))
        status = (retail.get("TransactionStatus") or _text(retail, "TransactionStatus") or "").lower()
        reason = (link.reason if link is not None else "") or ""
        kind: TxnType
        if status in ("postvoided", "postvoid", "post_voided") or reason.lower() in ("postvoid", "post_void", "void"):
            kind = "post_void"
        elif _flag(el, "CancelFlag") or status in ("voided", "cancelled", "canceled"):
            kind = "void"
        elif any(ln.kind == "return" and not ln.voided for ln in lines):
            kind = "return"
        else:
            kind = "sale"
        totals = list(_children(retail, "Total"))
        grand = next(
            (t for t in totals if t.get("TotalType") == "TransactionGrandAmount"), totals[0] if totals else None
        )
        total = None
        if grand is not None and grand.text and grand.text.strip():
            try:
                total = float(grand.text.strip())
            except ValueError:
                raise ValueError("Total is not a number") from None
        return Transaction.model_validate(
            {**doc, "type": kind, "lines": lines, "tenders": tenders, "total": total, "link": link}
        )

    def link(self, el: ET.Element | None) -> PosLink | None:
        """A TransactionLink (to the original sale of a return, or the voided transaction)."""
        if el is None:
            return None
        seq = _text(el, "SequenceNumber")
        if seq is None:
            raise ValueError("TransactionLink has no SequenceNumber")
        return PosLink.model_validate(
            {
                "id": seq, "lane": _text(el, "WorkstationID"), "store": _text(el, "RetailStoreID"),
                "business_day": (_text(el, "BusinessDayDate") or "")[:10] or None, "reason": el.get("ReasonCode"),
            }
        )  # fmt: skip

    def line(self, item: ET.Element) -> PosLine | None:
        """A Sale or Return LineItem."""
        sale, ret = _child(item, "Sale"), _child(item, "Return")
        body = sale if sale is not None else ret
        if body is None:
            return None
        qty = _number(body, "Quantity")
        qty = 1.0 if qty is None else qty
        regular = _number(body, "RegularSalesUnitPrice")
        actual = _number(body, "ActualSalesUnitPrice")
        amount = _number(body, "ExtendedAmount")
        if amount is None:
            unit = actual if actual is not None else regular
            if unit is None:
                raise ValueError(f"LineItem {_text(item, 'SequenceNumber')}: no ExtendedAmount or unit price")
            amount = unit * qty
        discount = employee = 0.0
        employee_id = override_reason = None
        override = promoted = False
        for mod in _children(body, "RetailPriceModifier"):
            if _flag(mod, "VoidFlag"):
                continue
            code = (_text(mod, "ReasonCode") or "").lower()
            promo = (_text(mod, "PromotionID") or "").lower()
            value = abs(_number(mod, "Amount") or 0.0)
            if code in self.employee_codes or (promo and promo in self.employee_promotions):
                employee += value
                employee_id = _text(mod, "EmployeeID") or employee_id
            elif code in self.override_codes:
                override, override_reason = True, _text(mod, "ReasonCode")
                continue  # the override is the new price, not a discount on it
            promoted = promoted or bool(promo)
            discount += value
        below = regular is not None and actual is not None and actual < regular
        if below and not (override or promoted or employee):
            override, override_reason = True, "price below regular, no promotion"
        time_text = _text(item, "EndDateTime") or _text(item, "BeginDateTime")
        return PosLine.model_validate(
            {
                "seq": int(s) if (s := _text(item, "SequenceNumber")) and s.isdigit() else None,
                "kind": "sale" if sale is not None else "return",
                "item_id": _text(body, "ItemID") or _text(body, "POSIdentity", "POSItemID"),
                "description": (_text(body, "Description") or "")[:200],
                "quantity": qty, "unit_price": actual, "regular_price": regular, "amount": abs(amount),
                "voided": _flag(item, "VoidFlag"), "time": _time(time_text, self.tz, "LineItem time"),
                "price_override": override, "override_reason": override_reason,
                "discount": round(discount, 2), "employee_discount": round(employee, 2),
                "employee_id": employee_id,
                "linked": ret is not None and _child(ret, "TransactionLink") is not None,
            }
        )  # fmt: skip

    def tender(self, item: ET.Element) -> PosTender | None:
        """A Tender LineItem (voided tenders are left out)."""
        el = _child(item, "Tender")
        if el is None or _flag(item, "VoidFlag"):
            return None
        card = _child(el, "CreditDebit")
        return PosTender.model_validate(
            {
                "type": _snake(el.get("TenderType") or el.get("TypeCode") or "unknown"),
                "amount": _number(el, "Amount") or 0.0,
                "card": _text(card, "PrimaryAccountNumber") if card is not None else None,
                "change": _number(el, "TenderChange", "Amount") or 0.0,
            }
        )


async def submit_all(service: TransactionIntake, result: ParseResult) -> tuple[int, int]:
    """Submit every transaction in order; (new, duplicates). A store failure propagates (the sender retries)."""
    new = dup = 0
    for txn in result.transactions:
        if (await service.submit(txn, SOURCE)).new:
            new += 1
        else:
            dup += 1
    return new, dup


def poslog_handler(get_service: Callable[[], TransactionIntake | None]) -> Any:
    """`POST /api/pos/poslog`: a POSLog document; 202 once every good transaction in it is stored."""

    async def handle(request: web.Request) -> web.Response:
        """Parse (in a thread), store every good transaction, then answer."""
        service = get_service()
        if service is None:
            return web.json_response(
                {"error": "POS intake is off: no pos section in the config (or a one-shot run)"}, status=404
            )
        data = await read_body(request, service.config.max_document_bytes)
        try:
            result = await asyncio.to_thread(PosLogReader(service.config, service.tz).parse, data)
        except DocumentRejected as exc:
            log.warning("pos: POSLog from %s rejected: %s", request.remote, exc)
            return web.json_response({"error": f"rejected: {exc}"}, status=400)
        new, dup = await submit_all(service, result)
        body = {"accepted": new, "duplicates": dup, "skipped": result.skipped, "rejected": result.errors}
        status = 422 if result.errors and not result.transactions else 202
        return web.json_response(body, status=status)

    return handle


def _masked_copy(data: bytes) -> bytes:
    for bom, encoding in _WIDE_BOMS:  # UTF-16/32 files: digits are not single bytes there
        if data.startswith(bom):
            return mask_pans(data.decode(encoding, errors="replace")).encode(encoding)
    # byte for byte: latin-1 maps every byte to one character, and masking only replaces ASCII digits (UTF-8
    # never uses ASCII bytes inside a multi-byte character), so the copy keeps the file's encoding
    return mask_pans(data.decode("latin-1")).encode("latin-1", errors="replace")


class NotARegularFile(OSError):
    """A drop-folder entry that is a symbolic link, a FIFO, a socket or a device: never read."""


def _read_regular(path: Path, limit: int) -> tuple[bytes, int]:
    """At most `limit` bytes of `path` and its size, only if it is a regular file at the moment it is opened (no
    link followed, a FIFO not waited on): checked on the open descriptor, so swapping the file for a link between
    the scan and the read changes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile("a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile("not a regular file")
        return f.read(limit), st.st_size


class PosLogDropFolder:
    """Polls a folder for POSLog files: each file's transactions are stored, then the file moves to done/ (or to
    rejected/ with a .reason file); the copies kept there have card numbers masked, the original is removed.
    Only regular files are read: a symbolic link (to the API token, say) or a FIFO is rejected unread and removed
    (a link's target is left alone), with a .reason file saying so."""

    def __init__(self, config: PosFileDropConfig, service: TransactionIntake, reader: PosLogReader) -> None:
        self.config = config
        self.service = service
        self.reader = reader
        self.done = config.path / "done"
        self.rejected = config.path / "rejected"
        self.processed = 0
        self.failed = 0
        self._lock = asyncio.Lock()  # one scan at a time: the poller and a manual scan never take a file twice
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Poll in the background until `close`."""
        self._task = asyncio.create_task(self.run(), name="pos-drop-folder")
        self._task.add_done_callback(_report_stop)

    async def close(self) -> None:
        """Stop polling; a file being taken is either stored and moved, or left for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Scan forever (a cleanup context cancels it)."""
        await asyncio.to_thread(self._mkdirs)
        while True:
            try:
                await self.scan()
            except OSError as exc:  # the folder on a share that went away: say so, keep trying
                log.warning("pos: drop folder %s: %s", self.config.path, exc)
            except Exception:  # the store failing, or a bug: the file stays and is tried again next time
                log.exception("pos: drop folder %s: scan failed", self.config.path)
            await asyncio.sleep(self.config.poll_s)

    def _mkdirs(self) -> None:
        for d in (self.config.path, self.done, self.rejected):
            d.mkdir(parents=True, exist_ok=True)

    def _ready(self) -> list[Path]:
        now = time.time()
        files = []
        for path in self.config.path.glob(self.config.pattern):
            try:
                st = path.lstat()  # the entry itself: a link is judged as a link, not as what it points to
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue  # done/, rejected/ or an operator's folder
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime >= self.config.settle_s:
                files.append((st.st_mtime, path))  # anything else is rejected by _take at once
        return [p for _, p in sorted(files)]

    async def scan(self) -> list[Path]:
        """Take every settled file once; returns them."""
        async with self._lock:
            await asyncio.to_thread(self._mkdirs)
            taken = []
            for path in await asyncio.to_thread(self._ready):
                try:
                    await self._take(path)
                except FileNotFoundError:
                    continue  # taken away by someone else (an operator, the POS rewriting it): nothing to do
                taken.append(path)
            return taken

    async def _take(self, path: Path) -> None:
        limit = self.service.config.max_document_bytes
        try:
            data, size = await asyncio.to_thread(_read_regular, path, limit + 1)
        except NotARegularFile as exc:
            await asyncio.to_thread(self._reject_unread, path, f"{exc}: only regular files are taken, unread")
            return
        if size > limit or len(data) > limit:
            reason = f"document is {max(size, len(data))} bytes, over the limit of {limit} (pos.max_document_bytes)"
            await asyncio.to_thread(self._reject, path, data[:4096] + b"\n<!-- cut: file too large -->\n", reason)
            return
        try:
            result = await asyncio.to_thread(self.reader.parse, data)
        except DocumentRejected as exc:
            await asyncio.to_thread(self._reject, path, data, str(exc))
            return
        new, dup = await submit_all(self.service, result)  # a store failure leaves the file for the next scan
        await asyncio.to_thread(self._finish, path, data, result)
        self.processed += 1
        log.info(
            "pos: %s: %d transaction(s) stored, %d already known, %d skipped, %d rejected",
            path.name, new, dup, result.skipped, len(result.errors),
        )  # fmt: skip

    def _target(self, folder: Path, name: str) -> Path:
        target = folder / name
        if target.exists():  # the same name dropped again (POS systems reuse file names per day)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            target = folder / f"{target.stem}.{stamp}{target.suffix}"
        return target

    def _reject(self, path: Path, data: bytes, reason: str) -> None:
        self.failed += 1
        target = self._target(self.rejected, path.name)
        _write(target, _masked_copy(data))
        _write(target.with_name(target.name + ".reason"), (mask_pans(reason) + "\n").encode())
        path.unlink(missing_ok=True)
        log.warning("pos: %s rejected: %s", path.name, reason)

    def _reject_unread(self, path: Path, reason: str) -> None:
        self.failed += 1
        target = self._target(self.rejected, path.name)
        _write(target.with_name(target.name + ".reason"), (reason + "\n").encode())
        path.unlink(missing_ok=True)  # the entry, never what a link points to
        log.warning("pos: %s rejected: %s", path.name, reason)

    def _finish(self, path: Path, data: bytes, result: ParseResult) -> None:
        target = self._target(self.done, path.name)
        _write(target, _masked_copy(data))
        if result.errors:
            text = f"kept in done/{target.name}; its other transactions were stored. Not taken:\n"
            _write(self.rejected / f"{target.name}.reason", (text + "\n".join(result.errors) + "\n").encode())
        path.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    write_private(path, data)  # 0600: receipts are personal data, even with card numbers masked


def _report_stop(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("pos: the drop folder stopped", exc_info=task.exception())

"""Point of sale: POSLog (hand-written ARTS samples, hostile XML), receipt text over TCP, JSON webhooks, card-number
masking, exception rules, fusion with the lane camera, the XProtect Transact feed; and end to end on the real clip
with the real Triton: a refund while the counter is empty raises the fused incident, one with a person does not."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from helpers import example
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.business.pos.poslog import DocumentRejected, PosLogDropFolder, PosLogReader, _masked_copy, safe_parse
from adapters.business.pos.receipt_text import ReceiptTextParser, ReceiptTextServer
from adapters.business.pos.transact import TransactServer
from adapters.sinks.nx.api import parse_incident as nx_incident
from plugin.app import add_intake_routes, auth_ctx, build_app, database_ctx, new_app, pos_ctx, sinks_ctx
from plugin.config.loader import parse_config
from plugin.config.pos import PosConfig
from plugin.config.root import Config
from plugin.errors import ConfigError
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.exceptions import PosExceptionRules
from plugin.fusion.pos.model import Transaction, render_receipt
from plugin.fusion.pos.service import PosService
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.pipeline.presence import PresenceLog
from plugin.redact import find_pans, luhn_ok, mask_pans
from plugin.types import Frame
from plugin.web.keys import DATABASE, POS, POS_INPUTS
from plugin.web.routes import setup_routes

pytestmark = [pytest.mark.pos]

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
TOKEN = "pos-test-token-0123456789"
UTC_TZ = ZoneInfo("UTC")
VISA = "4111111111111111"  # a test card number: Luhn-valid
MASTERCARD = "5555 5555 5555 4444"

# ---------------------------------------------------------------------------------------------------- samples

ARTS = "http://www.nrf-arts.org/IXRetail/namespace/"


def _txn(seq: str, body: str, begin: str = "14:00:01", end: str = "14:00:40", extra: str = "") -> str:
    return f"""
  <Transaction{extra}>
    <RetailStoreID>42</RetailStoreID>
    <WorkstationID>3</WorkstationID>
    <SequenceNumber>{seq}</SequenceNumber>
    <BusinessDayDate>2026-11-29</BusinessDayDate>
    <BeginDateTime>2026-11-29T{begin}</BeginDateTime>
    <EndDateTime>2026-11-29T{end}</EndDateTime>
    <OperatorID OperatorName="Sam">17</OperatorID>
    <CurrencyCode>EUR</CurrencyCode>
    {body}
  </Transaction>"""


def _sale(item: str, desc: str, price: str, extra: str = "", actual: str | None = None, line_attrs: str = "") -> str:
    return f"""
      <LineItem{line_attrs}>
        <SequenceNumber>1</SequenceNumber>
        <Sale ItemType="Stock">
          <ItemID>{item}</ItemID>
          <Description>{desc}</Description>
          <RegularSalesUnitPrice>{price}</RegularSalesUnitPrice>
          <ActualSalesUnitPrice>{actual or price}</ActualSalesUnitPrice>
          <ExtendedAmount>{actual or price}</ExtendedAmount>
          <Quantity>1</Quantity>{extra}
        </Sale>
      </LineItem>"""


def _tender(kind: str, amount: str, pan: str | None = None) -> str:
    card = (
        f'<CreditDebit CardType="Visa"><PrimaryAccountNumber>{pan}</PrimaryAccountNumber></CreditDebit>' if pan else ""
    )
    return f"""
      <LineItem><SequenceNumber>9</SequenceNumber>
        <Tender TenderType="{kind}"><Amount>{amount}</Amount>{card}</Tender>
      </LineItem>"""


def _return(item: str, desc: str, amount: str, link: str = "") -> str:
    return f"""
      <LineItem><SequenceNumber>1</SequenceNumber>
        <Return><ItemID>{item}</ItemID><Description>{desc}</Description>
          <RegularSalesUnitPrice>{amount}</RegularSalesUnitPrice><ExtendedAmount>{amount}</ExtendedAmount>
          <Quantity>1</Quantity>{link}</Return>
      </LineItem>"""


LINK = """<TransactionLink ReasonCode="Return"><RetailStoreID>42</RetailStoreID><WorkstationID>3</WorkstationID>
          <SequenceNumber>0999</SequenceNumber><BusinessDayDate>2026-11-28</BusinessDayDate></TransactionLink>"""

OVERRIDE_MOD = """
          <RetailPriceModifier><SequenceNumber>1</SequenceNumber><Amount Action="Replace">9.99</Amount>
            <ReasonCode>PriceOverride</ReasonCode></RetailPriceModifier>"""
EMPLOYEE_MOD = """
          <RetailPriceModifier><SequenceNumber>1</SequenceNumber><Amount Action="Subtract">12.00</Amount>
            <ReasonCode>EMP</ReasonCode><EmployeeID>17</EmployeeID></RetailPriceModifier>"""
VOIDED_LINE = """
      <LineItem VoidFlag="true"><SequenceNumber>2</SequenceNumber><EndDateTime>2026-11-29T14:00:30</EndDateTime>
        <Sale><ItemID>0077</ItemID><Description>Leather jacket</Description>
          <RegularSalesUnitPrice>59.99</RegularSalesUnitPrice><ExtendedAmount>59.99</ExtendedAmount></Sale>
      </LineItem>"""
POST_VOID = """<RetailTransaction TransactionStatus="PostVoided">
      <TransactionLink ReasonCode="PostVoid"><WorkstationID>3</WorkstationID><SequenceNumber>1001</SequenceNumber>
      </TransactionLink><Total TotalType="TransactionGrandAmount">39.99</Total></RetailTransaction>"""


def _retail(*parts: str) -> str:
    return "<RetailTransaction>" + "".join(parts) + "</RetailTransaction>"


# Hand-written after the ARTS POSLog shapes (INTEGRATIONS.md 7.1): a sale with a voided line and a card tender, a
# return with its receipt (TransactionLink) and one without, a no-sale, price overrides (by reason code, and a price
# under the regular one without a promotion), an employee discount over policy on the operator's own id, a
# post-void, and two transactions with nothing for loss prevention (training mode, operator sign-on).
POSLOG = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<POSLog xmlns="{ARTS}">'
    + _txn("1001", _retail(_sale("0012345", "Jeans", "39.99"), VOIDED_LINE, _tender("CreditDebit", "39.99", VISA),
                           '<Total TotalType="TransactionGrandAmount">39.99</Total>'))
    + _txn("1002", _retail(_return("0099", "Jacket", "59.99", LINK), _tender("Cash", "-59.99")))
    + _txn("1003", _retail(_return("0099", "Jacket", "59.99"), _tender("Cash", "-59.99")))
    + _txn("1004", "<ControlTransaction><NoSale/></ControlTransaction>", begin="14:01:00", end="14:01:05")
    + _txn("1005", _retail(_sale("0055", "Shirt " + VISA, "19.99", OVERRIDE_MOD, actual="9.99"),
                           _sale("0056", "Socks", "10.00", actual="6.00")))
    + _txn("1006", _retail(_sale("0060", "Coat", "40.00", EMPLOYEE_MOD, actual="28.00")))
    + _txn("1007", POST_VOID, begin="14:02:00", end="14:02:10")
    + _txn("1008", _retail(_sale("1", "Training", "5.00")), extra=' TrainingModeFlag="true"')
    + _txn("1009", "<ControlTransaction><OperatorSignOn/></ControlTransaction>")
    + "\n</POSLog>\n"
)  # fmt: skip


def pos_doc(**pos: Any) -> dict[str, Any]:
    """The example config with a lane 3 camera (zones counter and till) and a `pos` section."""
    doc = example()
    doc["cameras"][0]["zones"] += [
        {"id": "counter", "polygon": [[0.4, 0.6], [0.9, 0.6], [0.9, 1.0], [0.4, 1.0]]},
        {"id": "till", "polygon": [[0.0, 0.0], [0.3, 0.0], [0.3, 0.4], [0.0, 0.4]]},
    ]
    doc["pos"] = {
        "lanes": [{"id": 3, "camera": "cam1", "customer_zone": "counter", "staff_zone": "till"}],
        "fusion": {"window_pad_s": 1, "wait_max_s": 1},
        **pos,
    }
    return doc


def pos_config(**pos: Any) -> Config:
    """A parsed config with a `pos` section."""
    return parse_config(pos_doc(**pos))


def reader(config: PosConfig | None = None) -> PosLogReader:
    """A POSLog reader with the default policy."""
    return PosLogReader(config or PosConfig(), UTC_TZ)


# ---------------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("no card here 1234", "no card here 1234"),
        (f"VISA {VISA} APPROVED", "VISA ************1111 APPROVED"),
        (f"MC {MASTERCARD}", "MC **** **** **** 4444"),
        ("card 4111-1111-1111-1111 ok", "card ****-****-****-1111 ok"),
        ("4111111111111112", "4111111111111112"),  # fails Luhn: not a card
        ("2026-11-29 14:03:00 TXN 1001 LANE 3", "2026-11-29 14:03:00 TXN 1001 LANE 3"),  # dates and ids survive
        ("total 1234567890.12", "total 1234567890.12"),
        # inside a fixed-width record; another window passing Luhn hides two more: more, never less
        (f"glued 000{VISA}000", "glued 000**************11000"),
        (f"%B{VISA}^DOE/JOHN^25121011234?", "[track data removed]"),  # track 1: gone whole
        (f";{VISA}=25121011234?", "[track data removed]"),  # track 2
        ("amex 378282246310005", "amex ***********0005"),
    ],
)
def test_card_numbers_are_masked(text: str, expected: str) -> None:
    assert mask_pans(text) == expected


def test_at_most_first_six_and_last_four_are_kept() -> None:
    assert mask_pans(VISA, keep_first=6) == "411111******1111"
    assert mask_pans(VISA, keep_first=12, keep_last=8) == "411111******1111"  # capped at PCI DSS's 6 + 4


def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


pans = st.builds(
    lambda brand, rest: _luhn_complete(brand + rest),
    st.sampled_from(["4", "51", "55", "2221", "34", "37", "6011", "62"]),
    st.integers(min_value=10, max_value=16).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
).filter(lambda p: 13 <= len(p) <= 19)
separators = st.sampled_from(["", " ", "-"])
filler = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@given(pan=pans, sep=separators, before=filler, after=filler)
@settings(max_examples=300, deadline=None)
def test_property_a_card_number_never_survives(pan: str, sep: str, before: str, after: str) -> None:
    grouped = sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
    text = f"{before} {grouped} {after}"
    masked = mask_pans(text)
    assert len(masked) == len(text)  # column layouts of receipts survive
    assert pan not in re.sub(r"[ -]", "", masked)
    assert find_pans(masked) == []  # nothing card-like is left anywhere
    assert mask_pans(masked) == masked  # idempotent


@given(text=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_property_masking_only_ever_hides_digits(text: str) -> None:
    masked = mask_pans(text)
    if "[track data removed]" not in masked:
        assert len(masked) == len(text)
        assert all(a == b or (a.isdigit() and b == "*") for a, b in zip(text, masked, strict=True))
    assert find_pans(masked) == []


def test_a_transaction_is_masked_when_it_is_built() -> None:
    txn = Transaction.model_validate(
        {
            "id": 1, "lane": 3, "end": T0, "receipt": [f"VISA {VISA}"],
            "lines": [{"description": f"gift card {VISA}", "amount": 25}],
            "tenders": [{"type": "credit", "amount": 25, "card": VISA}],
        }
    )  # fmt: skip
    dumped = json.dumps(txn.payload())
    assert VISA not in dumped and "************1111" in dumped
    assert find_pans(dumped) == []


# ---------------------------------------------------------------------------------------------------- POSLog


def test_poslog_samples_normalise() -> None:
    result = reader().parse(POSLOG.encode())
    assert result.errors == []
    assert result.skipped == 2  # training mode and operator sign-on
    by_id = {t.id: t for t in result.transactions}
    assert [t.type for t in result.transactions] == ["sale", "return", "return", "no_sale", "sale", "sale", "post_void"]
    sale = by_id["1001"]
    assert sale.lane == "3" and sale.store == "42" and sale.operator == "17" and sale.operator_name == "Sam"
    assert sale.begin == T0 + timedelta(seconds=1) and sale.end == T0 + timedelta(seconds=40)  # naive = pos tz
    assert [ln.voided for ln in sale.lines] == [False, True]
    assert sale.lines[1].time == T0 + timedelta(seconds=30) and sale.lines[1].amount == 59.99
    assert sale.tenders[0].type == "credit_debit" and sale.tenders[0].card == "************1111"
    assert sale.total == 39.99
    assert by_id["1002"].lines[0].linked  # the Return carries its own TransactionLink: a receipt
    assert by_id["1003"].link is None and not by_id["1003"].lines[0].linked
    override = by_id["1005"].lines
    assert override[0].price_override and override[0].override_reason == "PriceOverride"
    assert override[0].description == "Shirt ************1111"  # a PAN typed into a description is masked too
    assert override[1].price_override  # below regular price without a promotion
    emp = by_id["1006"].lines[0]
    assert emp.employee_discount == 12.0 and emp.employee_id == "17" and not emp.price_override
    post = by_id["1007"]
    assert post.link is not None and post.link.id == "1001" and post.link.reason == "PostVoid"


def test_poslog_exceptions() -> None:
    rules = PosExceptionRules(PosConfig())
    found = {t.id: sorted(e.name for e in rules.check(t)) for t in reader().parse(POSLOG.encode()).transactions}
    assert found == {
        "1001": ["line_void"],
        "1002": [],  # a return with its receipt
        "1003": ["refund_no_receipt"],
        "1004": ["no_sale"],
        "1005": ["price_override"],
        "1006": ["employee_discount"],  # 30% off (policy 20%) on the operator's own employee id
        "1007": ["post_void"],
    }
    [emp] = [e for t in reader().parse(POSLOG.encode()).transactions if t.id == "1006" for e in rules.check(t)]
    assert "30% off (policy 20%)" in emp.reason and "operator 17 discounted their own purchase" in emp.reason


def test_a_bad_transaction_does_not_lose_the_good_ones() -> None:
    bad = _txn("2001", "<RetailTransaction>" + _sale("1", "x", "abc") + "</RetailTransaction>")
    no_end = _txn("2002", "<ControlTransaction><NoSale/></ControlTransaction>").replace(
        "<EndDateTime>2026-11-29T14:00:40</EndDateTime>", ""
    )
    doc = POSLOG.replace("</POSLog>", bad + no_end + "</POSLog>")
    result = reader().parse(doc.encode())
    assert len(result.transactions) == 7
    assert len(result.errors) == 2
    assert "SequenceNumber 2001" in result.errors[0] and "not a number" in result.errors[0]
    assert "SequenceNumber 2002" in result.errors[1] and "EndDateTime is missing" in result.errors[1]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<POSLog><Transaction><WorkstationID>&lol9;</WorkstationID></Transaction></POSLog>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE POSLog [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<POSLog><Transaction><WorkstationID>&xxe;</WorkstationID></Transaction></POSLog>"""
DEEP = b"<POSLog>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</POSLog>"
NOT_XML = b"<POSLog><Transaction></POSLog>"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BILLION_LAUGHS, "document has a DTD"),
        (EXTERNAL_ENTITY, "document has a DTD"),
        (DEEP, "nested deeper than 40"),
        (b"<POSLog>" + b" " * 60_000 + b"</POSLog>", "over the limit of 50000"),
        (NOT_XML, "not well-formed XML: mismatched tag"),
        (b"", "not well-formed XML"),
        (b"<Receipt/>", "root element is <Receipt>, not <POSLog>"),
    ],
)
def test_hostile_and_malformed_documents_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    config = PosConfig(max_document_bytes=50_000)
    with pytest.raises(DocumentRejected, match=re.escape(reason)):
        reader(config).parse(data)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32", "latin-1"])
def test_kept_copies_are_masked_in_any_encoding(encoding: str) -> None:
    text = POSLOG.replace('encoding="UTF-8"', f'encoding="{encoding}"')
    doc = text.encode(encoding)
    copy = _masked_copy(doc).decode(encoding)
    assert VISA not in copy and "************1111" in copy and len(copy) == len(text)
    if encoding != "utf-32":  # expat reads no UTF-32: such a file is rejected, and its kept copy masked
        assert len(reader().parse(doc).transactions) == 7


def test_safe_parse_keeps_namespaced_documents() -> None:
    root = safe_parse(POSLOG.encode(), 1_000_000, 40)
    assert root.tag == f"{{{ARTS}}}POSLog"


# ---------------------------------------------------------------------------------------------------- the service


def feed_presence(presence: PresenceLog, seconds: float, people: dict[int, list[int]], staff: bool = False) -> None:
    """Analysed frames at 5 fps from T0 for `seconds`; track ids in the counter zone per whole second."""
    image = np.full((432, 768, 3), 90, np.uint8)
    for i in range(int(seconds * 5)):
        s = i / 5
        ids = people.get(int(s), [])
        track_ids = np.asarray([*ids, 99], np.int32)
        counter = np.array([True] * len(ids) + [False], bool)
        till = np.array([False] * len(ids) + [staff], bool)
        presence.record(Frame("cam1", i, T0 + timedelta(seconds=s), 0.0, image), {"counter": counter, "till": till},
                        track_ids)  # fmt: skip


@dataclass
class Env:
    database: AsyncDatabase
    hub: BusinessHub
    presence: PresenceLog
    service: PosService

    async def incidents(self) -> list[dict[str, Any]]:
        return await self.database.call(self.database.sync.incidents)

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return await self.database.call(self.database.sync.business_events, "2026-01-01", "2027-01-01", kind)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config = pos_config()
    assert config.pos is not None
    database = AsyncDatabase(tmp_path / "db.sqlite")
    hub = BusinessHub(database)
    presence = PresenceLog()
    incidents = IncidentManager(database, tmp_path / "evidence", Explainer("UTC"), ["nx"])
    service = PosService(config.pos, "store-42", "UTC", hub, presence, incidents)
    try:
        yield Env(database, hub, presence, service)
    finally:
        await service.close()
        await database.close()


def refund(txn_id: str, begin_s: float, end_s: float, linked: bool = False, **extra: Any) -> Transaction:
    """A cash refund on lane 3 between T0+begin_s and T0+end_s."""
    return Transaction.model_validate(
        {
            "id": txn_id, "lane": "3", "type": "return", "operator": "17",
            "begin": T0 + timedelta(seconds=begin_s), "end": T0 + timedelta(seconds=end_s),
            "lines": [{"kind": "return", "description": "Jacket", "amount": 59.99, "linked": linked}],
            "tenders": [{"type": "cash", "amount": -59.99}], **extra,
        }
    )  # fmt: skip


async def test_refund_with_the_counter_empty_raises_the_fused_incident(env: Env) -> None:
    feed_presence(env.presence, 60, {s: [4] for s in range(20, 40)})  # a customer at the counter 20-40 s
    assert (await env.service.submit(refund("1", 2, 10), "test")).new
    await env.service.submit(refund("2", 25, 32), "test")
    await env.service.idle()
    incidents = await env.incidents()
    fused = [i for i in incidents if i["rule_id"] == "pos.refund_no_customer"]
    assert len(fused) == 1, [i["explanation"] for i in incidents]
    inc = fused[0]
    assert inc["camera"] == "cam1" and inc["zone"] == "counter" and inc["severity"] == "critical"
    assert inc["track_ids"] == [] and inc["state"] == "end"
    assert inc["details"]["txn_id"] == "1" and inc["details"]["lane"] == "3" and inc["details"]["people"] == 0
    assert "TXN 1 LANE 3 OP 17" in inc["details"]["receipt"] and "REFUND NO RCPT" in inc["details"]["receipt"]
    assert inc["explanation"].startswith(
        "Refund of 59.99 on lane 3 (txn 1, operator 17) with no customer in zone counter on cam1, 14:00:01-14:00:11 "
        "(video watched 100%; staff zone till: nobody). Receipt: TXN 1 LANE 3 OP 17 2026-11-29 14:00:10 | RETURN"
    )
    assert (await asyncio.to_thread(Path(inc["snapshot"]).read_bytes))[:2] == b"\xff\xd8"  # the moment
    # both refunds have no receipt: exception incidents for both, with what the camera saw
    no_receipt = sorted((i for i in incidents if i["rule_id"] == "pos.refund_no_receipt"), key=lambda i: i["start"])
    assert [i["details"]["people"] for i in no_receipt] == [0, 1]
    assert no_receipt[1]["track_ids"] == [4]
    assert "customer zone counter on cam1: 1 person, staff zone till: nobody" in no_receipt[1]["explanation"]
    # the same refund sent again (a retried POST) is stored once and judged once
    assert not (await env.service.submit(refund("1", 2, 10), "test")).new
    await env.service.idle()
    assert len(await env.incidents()) == len(incidents)
    [event] = await env.events("pos.refund_no_customer")
    assert event["payload"]["verdict"] == "absent" and event["payload"]["transaction"] == "1"


async def test_unwatched_refund_is_unverified_never_no_customer(env: Env) -> None:
    feed_presence(env.presence, 10, {})  # the camera stops after 10 s
    await env.service.submit(refund("7", 30, 40), "test")
    await env.service.idle()
    assert [i["rule_id"] for i in await env.incidents()] == ["pos.refund_no_receipt"]
    [exc] = await env.incidents()
    assert "customer presence unverified (cam1 watched 0% of 14:00:29-14:00:41)" in exc["explanation"]
    [event] = await env.events("pos.unverified")
    assert event["payload"]["check"] == "refund_no_customer" and event["payload"]["verdict"] == "unverified"
    assert await env.events("pos.refund_no_customer") == []


async def test_no_sale_with_nobody_at_the_counter(env: Env) -> None:
    feed_presence(env.presence, 60, {s: [8] for s in range(40, 50)})
    for txn_id, at in (("10", 10), ("11", 45)):
        end = T0 + timedelta(seconds=at)
        txn = Transaction(id=txn_id, lane="3", type="no_sale", begin=end - timedelta(seconds=2), end=end, operator="5")
        await env.service.submit(txn, "test")
    await env.service.idle()
    incidents = await env.incidents()
    assert [i["details"]["txn_id"] for i in incidents if i["rule_id"] == "pos.no_sale_nobody"] == ["10"]
    assert not any(i["rule_id"] == "pos.no_sale" for i in incidents)  # plain no-sales are off by default
    assert len(await env.events("pos.no_sale")) == 2  # but stored as exceptions


async def test_void_after_the_customer_left(env: Env) -> None:
    feed_presence(env.presence, 60, {s: [3] for s in range(0, 20)})  # the customer leaves at 20 s
    sale = {
        "lane": "3", "operator": "17", "begin": T0 + timedelta(seconds=2), "end": T0 + timedelta(seconds=40),
        "lines": [
            {"description": "Jeans", "amount": 39.99},
            {"description": "Jacket", "amount": 59.99, "voided": True, "time": T0 + timedelta(seconds=35)},
        ],
    }  # fmt: skip
    await env.service.submit(Transaction.model_validate({**sale, "id": "20"}), "test")
    early = dict(sale, lines=[sale["lines"][0], {**sale["lines"][1], "time": T0 + timedelta(seconds=10)}])
    await env.service.submit(Transaction.model_validate({**early, "id": "21"}), "test")
    await env.service.idle()
    left = [i for i in await env.incidents() if i["rule_id"] == "pos.void_customer_left"]
    assert len(left) == 1 and left[0]["details"]["txn_id"] == "20"
    assert left[0]["track_ids"] == [3]  # who was there before
    assert left[0]["explanation"].startswith(
        "Void of 59.99 on lane 3 (txn 20, operator 17) at 14:00:35 after the customer left: 1 person in zone counter "
        "earlier, nobody at the void on cam1"
    )


async def test_post_void_after_the_customer_left(env: Env) -> None:
    feed_presence(env.presence, 60, {s: [6] for s in range(0, 15)})
    sale = refund("30", 2, 12).model_dump() | {"type": "sale", "lines": [{"description": "TV", "amount": 499.0}]}
    await env.service.submit(Transaction.model_validate(sale), "test")
    post = Transaction.model_validate(
        {"id": "31", "lane": "3", "type": "post_void", "operator": "17", "begin": T0 + timedelta(seconds=40),
         "end": T0 + timedelta(seconds=45), "link": {"id": "30", "reason": "PostVoid"}, "total": 499.0}
    )  # fmt: skip
    await env.service.submit(post, "test")
    await env.service.idle()
    rules = sorted(i["rule_id"] for i in await env.incidents())
    assert rules == ["pos.post_void", "pos.void_customer_left"]


async def test_operator_frequency_outlier(env: Env) -> None:
    feed_presence(env.presence, 60, {s: [1] for s in range(60)})  # customers present: only the count matters
    for n in range(5):
        await env.service.submit(refund(f"4{n}", n * 10, n * 10 + 5, linked=True, link={"id": f"9{n}"}), "test")
    await env.service.idle()
    outliers = await env.events("pos.operator_frequency")
    assert len(outliers) == 1  # the 4th return in the hour (limit 3) raises it; the 5th is in the same window
    assert outliers[0]["payload"]["count"] == 4 and outliers[0]["payload"]["category"] == "return"
    [inc] = [i for i in await env.incidents() if i["rule_id"] == "pos.operator_frequency"]
    assert "operator 17: 4 return(s) within 60 min (limit 3)" in inc["explanation"]


async def test_unknown_lane_is_stored_without_video(env: Env) -> None:
    txn = Transaction(id="1", lane="99", type="no_sale", end=T0)
    await env.service.submit(txn, "test")
    await env.service.idle()
    assert await env.incidents() == []
    assert len(await env.events("pos.no_sale")) == 1


async def test_receipt_reaches_nx_in_the_description(env: Env) -> None:
    feed_presence(env.presence, 30, {})
    await env.service.submit(refund("1", 2, 10), "test")
    await env.service.idle()
    [row] = [i for i in await env.incidents() if i["rule_id"] == "pos.refund_no_customer"]
    # the Nx sink writes the explanation as the bookmark and generic-event description
    assert "Receipt: TXN 1 LANE 3 OP 17" in nx_incident(row).explanation
    assert "RETURN Jacket REFUND NO RCPT 59.99" in nx_incident(row).explanation


# ---------------------------------------------------------------------------------------------------- receipt text


def text_feed(**over: Any) -> Any:
    return pos_config(text=[{"port": 0, **over}]).pos.text[0]  # type: ignore[union-attr]


def test_normalised_receipt_reads_back() -> None:
    original = reader().parse(POSLOG.encode()).transactions
    parser = ReceiptTextParser(text_feed(), UTC_TZ, clock=lambda: T0)
    rules, rules_back = PosExceptionRules(PosConfig()), PosExceptionRules(PosConfig())
    for txn in original:
        out = []
        for line in render_receipt(txn, UTC_TZ):
            out.extend(parser.feed_line(line))
        [back] = out
        assert isinstance(back, Transaction)
        assert (back.id, back.lane, back.type, back.operator) == (txn.id, txn.lane, txn.type, txn.operator)
        assert back.end == txn.end  # from the header's time stamp
        assert sorted(e.name for e in rules_back.check(back)) == sorted(e.name for e in rules.check(txn))


def test_text_with_stray_lines_and_a_missing_end() -> None:
    parser = ReceiptTextParser(text_feed(lane="7"), UTC_TZ, clock=lambda: T0)
    assert parser.feed_line("WELCOME TO STORE 42") == []
    assert parser.feed_line("TXN 5") == []
    assert parser.feed_line("NO SALE") == []
    [first] = parser.feed_line("TXN 6")  # a new start closes the open one
    assert isinstance(first, Transaction) and first.type == "no_sale" and first.lane == "7"
    parser.feed_line(f"SALE Gift card {VISA} 25.00")
    [second] = parser.flush()
    assert isinstance(second, Transaction) and second.lines[0].description == "Gift card ************1111"
    assert parser.stray == 1


# ---------------------------------------------------------------------------------------------------- the app


async def _start(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def pos_app(tmp_path: Path, **pos: Any) -> tuple[web.Application, int]:
    """The application with the store, sinks and POS contexts (no cameras, no Triton), serving plugin.web."""
    doc = pos_doc(**pos)
    doc["storage"] = {"path": str(tmp_path / "data")}
    port = free_port()
    doc["web"] = {"port": port, "token": TOKEN}
    app = new_app(parse_config(doc))
    app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx, pos_ctx])
    setup_routes(app)
    add_intake_routes(app)
    return app, port


async def test_http_intake(tmp_path: Path) -> None:
    app, port = pos_app(tmp_path, max_document_bytes=200_000)
    runner = await _start(app, port)
    base = f"http://127.0.0.1:{port}/api/pos"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/poslog", data=POSLOG) as resp:
                assert resp.status == 401
            async with http.post(f"{base}/poslog", data=POSLOG, headers=auth) as resp:
                body = await resp.json()
                assert resp.status == 202, body
                assert body == {"accepted": 7, "duplicates": 0, "skipped": 2, "rejected": []}
            # stored before the answer: every transaction is in the store now
            rows = await app[DATABASE].call(
                app[DATABASE].sync.business_events, "2026-01-01", "2027-01-01", "pos.transaction"
            )
            assert len(rows) == 7 and VISA not in json.dumps(rows)
            async with http.post(f"{base}/poslog", data=POSLOG, headers=auth) as resp:
                assert (await resp.json())["duplicates"] == 7
            async with http.post(f"{base}/poslog", data=BILLION_LAUGHS, headers=auth) as resp:
                assert resp.status == 400 and "DTD" in (await resp.json())["error"]
            async with http.post(f"{base}/poslog", data=b"<POSLog>" + b" " * 300_000, headers=auth) as resp:
                assert resp.status == 413
            good = {"id": "J1", "lane": 3, "type": "no_sale", "end": "2026-11-29T14:00:05+00:00"}
            bad = {"id": "J2", "lane": 3, "type": "refund", "end": "2026-11-29T14:00:05", "card": VISA}
            async with http.post(f"{base}/events", json={"transactions": [good, bad]}, headers=auth) as resp:
                body = await resp.json()
                assert resp.status == 202 and body["accepted"] == 1
                text = " ".join(body["rejected"])
                assert "transactions[1].type: Input should be 'sale'" in text
                assert "transactions[1].end: Input should have timezone info" in text
                assert "transactions[1].card: Extra inputs are not permitted" in text and VISA not in text
            async with http.post(f"{base}/events", json=bad, headers=auth) as resp:
                assert resp.status == 422
            async with http.post(f"{base}/events", data=b"{nope", headers=auth) as resp:
                assert resp.status == 400
    finally:
        await runner.cleanup()


async def test_drop_folder_takes_good_files_and_rejects_hostile_ones(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a-good.xml").write_text(POSLOG)
    (drop / "b-laughs.xml").write_bytes(BILLION_LAUGHS)
    (drop / "c-xxe.xml").write_bytes(EXTERNAL_ENTITY)
    (drop / "d-deep.xml").write_bytes(DEEP)
    unreadable = _txn("3001", _retail(_sale("1", "x", "?")))
    bad_one = POSLOG.replace("</POSLog>", unreadable + "</POSLog>").replace("1001", "5001")
    (drop / "e-partly.xml").write_text(bad_one)
    (drop / "notes.txt").write_text("not mine")
    app, port = pos_app(tmp_path, file_drop={"path": str(drop), "settle_s": 0, "poll_s": 60})
    runner = await _start(app, port)
    try:
        [drop_folder] = [s for s in app[POS_INPUTS] if isinstance(s, PosLogDropFolder)]
        await drop_folder.scan()  # the first poll may be running too: scans are idempotent
        rows = await app[DATABASE].call(
            app[DATABASE].sync.business_events, "2026-01-01", "2027-01-01", "pos.transaction"
        )
        assert len(rows) == 8  # 7 from a-good, plus 5001 from e-partly (its others are duplicates of a-good)
    finally:
        await runner.cleanup()
    assert sorted(p.name for p in drop.iterdir()) == ["done", "notes.txt", "rejected"]
    assert sorted(p.name for p in (drop / "done").iterdir()) == ["a-good.xml", "e-partly.xml"]
    rejected = {p.name: p for p in (drop / "rejected").iterdir()}
    assert set(rejected) == {"b-laughs.xml", "b-laughs.xml.reason", "c-xxe.xml", "c-xxe.xml.reason", "d-deep.xml",
                             "d-deep.xml.reason", "e-partly.xml.reason"}  # fmt: skip
    assert "DTD" in rejected["b-laughs.xml.reason"].read_text()
    assert "nested deeper than 40" in rejected["d-deep.xml.reason"].read_text()
    partly = rejected["e-partly.xml.reason"].read_text()
    assert "kept in done/e-partly.xml" in partly and "SequenceNumber 3001" in partly
    kept = (drop / "done" / "a-good.xml").read_text()
    assert VISA not in kept and "************1111" in kept  # the copy kept has no card numbers


async def test_text_feed_and_transact_feed(tmp_path: Path) -> None:
    app, port = pos_app(tmp_path, text=[{"port": 0}], transact=[{"port": 0, "lanes": ["3"]}])
    runner = await _start(app, port)
    [transact] = [s for s in app[POS_INPUTS] if isinstance(s, TransactServer)]
    [text] = [s for s in app[POS_INPUTS] if isinstance(s, ReceiptTextServer)]
    try:
        t_reader, t_writer = await asyncio.open_connection("127.0.0.1", transact.port)
        for _ in range(50):
            if transact.clients:
                break
            await asyncio.sleep(0.05)
        _, reg_writer = await asyncio.open_connection("127.0.0.1", text.port)
        # three transactions pipelined in one segment, one on another lane, a card number in a tender line
        stream = (
            "TXN 501 LANE 3 OP 17 2026-11-29 14:00:10\r\nSALE Jeans 39.99\r\n*** VOID *** Jacket 59.99\r\n"
            f"TENDER CREDIT {VISA} 39.99\r\nEND TXN 501\r\n"
            "TXN 502 LANE 3 OP 17 2026-11-29 14:00:20\r\nNO SALE\r\nEND TXN 502\r\n"
            "TXN 503 LANE 4 OP 9 2026-11-29 14:00:30\r\nRETURN Kettle 25.00\r\nEND TXN 503\r\n"
        )
        reg_writer.write(stream.encode())
        await reg_writer.drain()
        lines: list[str] = []
        async with asyncio.timeout(10):
            while "END TXN 502" not in lines:
                lines.append((await t_reader.readline()).decode().rstrip("\r\n"))
        for _ in range(100):
            if text.received == 3:
                break
            await asyncio.sleep(0.05)
        assert text.received == 3
        reg_writer.close()
        t_writer.close()
    finally:
        await runner.cleanup()
    assert lines == [
        "TXN 501 LANE 3 OP 17 2026-11-29 14:00:10",
        "SALE Jeans 39.99",
        "*** VOID *** Jacket 59.99",
        "TOTAL 39.99",
        "TENDER CREDIT 39.99",  # the default patterns do not read cards from text: nothing to leak
        "END TXN 501",
        "TXN 502 LANE 3 OP 17 2026-11-29 14:00:20",
        "NO SALE",
        "END TXN 502",
    ]
    assert not any("503" in line for line in lines)  # lane 4 is not served by this feed


# ---------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("pos", "expected"),
    [
        ({"lanes": [{"id": 3, "camera": "cam9", "customer_zone": "counter"}]}, "pos.lanes[0].camera: unknown camera"),
        ({"lanes": [{"id": 3, "camera": "cam1", "customer_zone": "door"}]}, "pos.lanes[0].customer_zone: camera"),
        (
            {"lanes": [{"id": 3, "camera": "cam1", "customer_zone": "counter", "staff_zone": "x"}]},
            "pos.lanes[0].staff_zone: camera 'cam1' has no zone 'x'",
        ),
        ({"thresholds": {"line_void_min_amount": -1}}, "pos.thresholds.line_void_min_amount: must be >= 0"),
        ({"incidents": {"refund_no_customer": "loud"}}, "pos.incidents.refund_no_customer: "),
        ({"incidents": {"refund_no_customr": "info"}}, "pos.incidents.refund_no_customr: unknown key"),
        ({"text": [{"port": 9100, "patterns": {"start": "(unclosed"}}]}, "pos.text[0].patterns: start: not a valid"),
        ({"text": [{"port": 9100, "patterns": {"begin": "x"}}]}, "pos.text[0].patterns: unknown pattern 'begin'"),
        ({"operator_limits": {"max": {"refunds": 3}}}, "pos.operator_limits.max.refunds"),
        ({"timezone": "Mars/Olympus"}, "pos.timezone: unknown time zone"),
    ],
)
def test_config_errors_name_the_path(pos: dict[str, Any], expected: str) -> None:
    doc = pos_doc()
    doc["pos"].update(pos)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(doc)


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.mark.triton
@pytest.mark.slow
async def test_end_to_end_refund_on_the_real_clip(triton: EmbeddedTriton, clip: Path, tmp_path: Path) -> None:
    """The first 16 s of the clip: nobody at the table for ~6 s, then a person from ~6 s to ~20 s. Two refunds
    posted as JSON before the video is analysed: fusion waits for the video, then judges each."""
    video = tmp_path / "first16s.mp4"
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10, (768, 432))
    for _ in range(160):
        ok, img = cap.read()
        assert ok
        writer.write(img)
    writer.release()
    cap.release()
    doc = example()
    doc["storage"] = {"path": str(tmp_path / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    doc["web"] = {"port": free_port(), "token": TOKEN}
    doc["cameras"][0].update(source=str(video), start_time="2026-11-29T14:00:00+00:00")
    doc["rules"] = []
    doc["pos"] = {
        "lanes": [{"id": "3", "camera": "cam1", "customer_zone": "table"}],
        "fusion": {"window_pad_s": 0.5, "wait_max_s": 60},
    }
    app = build_app(parse_config(doc))
    runner = await _start(app, doc["web"]["port"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    empty = refund("E1", 1, 4).payload()
    busy = refund("P1", 9, 12).payload()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{doc['web']['port']}/api/pos/events"
            async with http.post(url, json=[empty, busy], headers=auth) as resp:
                assert resp.status == 202 and (await resp.json())["accepted"] == 2
        service = app[POS]
        assert service is not None
        await service.idle(timeout_s=90)
        incidents = await app[DATABASE].call(app[DATABASE].sync.incidents)
    finally:
        await runner.cleanup()
    fused = [i for i in incidents if i["rule_id"] == "pos.refund_no_customer"]
    assert [i["details"]["txn_id"] for i in fused] == ["E1"], [i["explanation"] for i in incidents]
    inc = fused[0]
    assert inc["track_ids"] == [] and inc["details"]["people"] == 0 and inc["details"]["watched"] is True
    assert "with no customer in zone table on cam1, 14:00:00-14:00:04" in inc["explanation"]
    assert await asyncio.to_thread(Path(inc["snapshot"]).is_file)
    # the refund with a person at the table: only its no-receipt exception, which names who was there
    [other] = [i for i in incidents if i["details"]["txn_id"] == "P1"]
    assert other["rule_id"] == "pos.refund_no_receipt" and other["details"]["people"] == 1
    assert len(other["track_ids"]) == 1 and await asyncio.to_thread(Path(other["snapshot"]).is_file)

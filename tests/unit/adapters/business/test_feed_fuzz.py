"""Property tests (hypothesis) for the business parsers that take outside input: POSLog documents, and the POS and
door JSON webhooks through aiohttp's test client. Each input must give a result or a clear error (an HTTP status
with a reason), never an exception escaping, a hang or an answer that grows without bound. Receipt text and DC-09
frames have theirs beside their listeners (test_receipt_text_feed.py, test_sia.py), ONVIF event messages in
test_onvif_events.py, the config loader in test_config_fuzz.py.

The quick tier runs a few hundred examples each; the `slow` variants run ten times as many.
`pytest --hypothesis-show-statistics` prints how many each ran."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.business.access.webhook import events_handler as access_events_handler
from adapters.business.pos.poslog import DocumentRejected, ParseResult, PosLogReader, poslog_handler
from adapters.business.pos.webhook import events_handler as pos_events_handler
from plugin.config.access import AccessConfig
from plugin.config.pos import PosConfig
from plugin.fusion.access.service import AccessService
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.model import Transaction
from plugin.fusion.pos.service import PosService
from plugin.incidents.database import AsyncDatabase
from plugin.pipeline.presence import PresenceLog
from plugin.redact import find_pans

pytestmark = [pytest.mark.pos]

FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
DEEP = settings(max_examples=3000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
HTTP_FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
HTTP_DEEP = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
VISA = "4111111111111111"

# -- POSLog --------------------------------------------------------------------------------------------------------

SAMPLE = f"""<?xml version="1.0" encoding="UTF-8"?>
<POSLog xmlns="http://www.nrf-arts.org/IXRetail/namespace/">
  <Transaction>
    <RetailStoreID>42</RetailStoreID><WorkstationID>3</WorkstationID><SequenceNumber>1001</SequenceNumber>
    <BusinessDayDate>2026-11-29</BusinessDayDate><BeginDateTime>2026-11-29T14:00:01</BeginDateTime>
    <EndDateTime>2026-11-29T14:00:40</EndDateTime><OperatorID OperatorName="Sam">17</OperatorID>
    <RetailTransaction TransactionStatus="Finished">
      <LineItem VoidFlag="true"><SequenceNumber>1</SequenceNumber><Sale><ItemID>1</ItemID>
        <Description>Jeans</Description><RegularSalesUnitPrice>39.99</RegularSalesUnitPrice>
        <ActualSalesUnitPrice>29.99</ActualSalesUnitPrice><ExtendedAmount>29.99</ExtendedAmount>
        <Quantity>1</Quantity><RetailPriceModifier><Amount>10.00</Amount><ReasonCode>EMP</ReasonCode>
        <EmployeeID>17</EmployeeID></RetailPriceModifier></Sale></LineItem>
      <LineItem><Return><ItemID>9</ItemID><ExtendedAmount>59.99</ExtendedAmount>
        <TransactionLink ReasonCode="Return"><SequenceNumber>0999</SequenceNumber></TransactionLink></Return></LineItem>
      <LineItem><Tender TenderType="CreditDebit"><Amount>39.99</Amount>
        <CreditDebit><PrimaryAccountNumber>{VISA}</PrimaryAccountNumber></CreditDebit></Tender></LineItem>
      <Total TotalType="TransactionGrandAmount">39.99</Total>
    </RetailTransaction>
  </Transaction>
  <Transaction><WorkstationID>3</WorkstationID><SequenceNumber>1002</SequenceNumber>
    <EndDateTime>2026-11-29T14:01:05</EndDateTime><ControlTransaction><NoSale/></ControlTransaction></Transaction>
</POSLog>
""".encode()

_VOCABULARY = ["POSLog", "Transaction", "RetailTransaction", "ControlTransaction", "NoSale", "LineItem", "Sale",
               "Return", "Tender", "CreditDebit", "PrimaryAccountNumber", "Total", "TransactionLink", "WorkstationID",
               "SequenceNumber", "EndDateTime", "BeginDateTime", "BusinessDayDate", "ItemID", "Description",
               "ExtendedAmount", "RegularSalesUnitPrice", "ActualSalesUnitPrice", "Quantity", "RetailPriceModifier",
               "Amount", "ReasonCode", "PromotionID", "EmployeeID", "OperatorID", "TenderChange"]  # fmt: skip
_ATTRS = ["VoidFlag", "TrainingModeFlag", "CancelFlag", "TransactionStatus", "TenderType", "TotalType", "ReasonCode"]
_ODD_VALUES = ["", "3", "1001", "39.99", "-1e308", "1e400", "nan", "inf", "true", "PostVoid", "EMP",
               "2026-11-29T14:00:40", "2026-11-29T14:00:40+99:00", "9999-12-31T23:59:59", "0001-01-01T00:00:00",
               "TransactionGrandAmount", VISA, "x" * 300]  # fmt: skip
_VALUES = st.one_of(st.sampled_from(_ODD_VALUES), st.text(max_size=40))
_xml_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40)


def _element(tag: str, text: str | None, attrs: dict[str, str], children: list[ET.Element]) -> ET.Element:
    el = ET.Element(tag, attrs)
    el.text = text
    el.extend(children)
    return el


_elements = st.recursive(
    st.builds(_element, st.sampled_from(_VOCABULARY), _VALUES.filter(lambda v: "\x00" not in v) | st.none(),
              st.dictionaries(st.sampled_from(_ATTRS), _xml_text, max_size=2), st.just([])),
    lambda inner: st.builds(_element, st.sampled_from(_VOCABULARY), st.none(),
                            st.dictionaries(st.sampled_from(_ATTRS), _xml_text, max_size=2),
                            st.lists(inner, max_size=5)),
    max_leaves=40,
)  # fmt: skip


def _tree(root: ET.Element) -> bytes:
    try:
        return ET.tostring(_element("POSLog", None, {}, [root]))
    except ValueError:  # a character XML cannot carry
        return b"<POSLog/>"


def _garble(edits: list[tuple[float, int, bytes]]) -> bytes:
    data = bytearray(SAMPLE)
    for where, cut, insert in edits:
        i = int(where * len(data))
        data[i : i + cut] = insert
    return bytes(data)


poslog_documents = st.one_of(
    st.binary(max_size=2000),
    st.builds(_tree, _elements),
    st.builds(_garble, st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8), st.binary(max_size=8)), max_size=8)),
    st.integers(0, 300).map(lambda n: b"<POSLog>" + b"<Transaction>" * n + b"</Transaction>" * n + b"</POSLog>"),
)


def _poslog_property(data: bytes) -> None:
    reader = PosLogReader(PosConfig(max_document_bytes=100_000), ZoneInfo("Europe/Berlin"))
    try:
        result = reader.parse(data)
    except DocumentRejected as exc:
        assert str(exc)
        return
    assert isinstance(result, ParseResult)
    for txn in result.transactions:
        assert isinstance(txn, Transaction)
        assert find_pans(json.dumps(txn.payload())) == []
    for error in result.errors:
        assert error.startswith("Transaction[") and VISA not in error


@FAST
@given(poslog_documents)
@example(b'<?xml version="" encoding="U"?>')  # found by the slow tier: an unknown encoding raised LookupError
def test_poslog_gives_transactions_or_reasons(data: bytes) -> None:
    _poslog_property(data)


@pytest.mark.slow
@DEEP
@given(poslog_documents)
def test_poslog_gives_transactions_or_reasons_many(data: bytes) -> None:
    _poslog_property(data)


def test_the_sample_reads() -> None:
    """The fuzzed sample is a good document: mutations start from something that parses."""
    result = PosLogReader(PosConfig(), ZoneInfo("UTC")).parse(SAMPLE)
    assert [t.id for t in result.transactions] == ["1001", "1002"] and result.errors == []


# -- the webhooks, through aiohttp ---------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)  # fmt: skip
_times = st.one_of(
    st.sampled_from(["2026-11-29T14:00:05+00:00", "2026-11-29T14:00:05", "9999-12-31T23:59:59-23:59", "1", ""]),
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat), _scalars,
)  # fmt: skip
_lines = st.lists(st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["sale", "return", "x"]), "description": st.text(max_size=250) | _scalars,
    "amount": st.floats() | st.integers() | _scalars, "voided": _scalars, "time": _times, "quantity": _scalars,
}), max_size=5)  # fmt: skip
_transactions = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=70), st.integers()), "lane": st.sampled_from(["3", 3, "", "x" * 70]),
     "end": _times},
    optional={"type": st.sampled_from(["sale", "return", "void", "refund"]), "begin": _times, "lines": _lines,
              "tenders": st.lists(st.fixed_dictionaries({"type": st.text(max_size=5), "amount": _scalars}), max_size=3),
              "total": _scalars, "receipt": st.lists(st.text(max_size=450), max_size=3), "extra": _json,
              "link": st.fixed_dictionaries({"id": _scalars})},
)  # fmt: skip
_door_events = st.fixed_dictionaries(
    {"door": st.sampled_from(["D1", "D2", 1, "", "x" * 70]), "kind": st.sampled_from(["granted", "forced", "open"]),
     "time": _times},
    optional={"badge": _scalars, "id": _scalars, "extra": _json},
)  # fmt: skip


def _bodies(item: st.SearchStrategy[Any], key: str) -> st.SearchStrategy[bytes]:
    documents = st.one_of(item, st.lists(item, max_size=4), st.fixed_dictionaries({key: st.lists(item, max_size=4)}),
                          _json)  # fmt: skip
    return st.one_of(
        documents.map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=300),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # nesting the decoders and validators recurse on
        st.integers(1, 3000).map(lambda n: b'{"lines":' + b"[" * n + b"]" * n + b"}"),
        st.integers(1, 1500).map(lambda n: json.dumps([{}] * n).encode()),  # more items than a request may carry
    )


@contextmanager
def webhook_client(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]]]:
    """The real handlers on an aiohttp app with the real POS and access services and database (the routes and
    their login are the app's business, tested with it; here the parsers are)."""
    loop = asyncio.new_event_loop()
    database = AsyncDatabase(tmp_path / "fuzz.sqlite")
    hub = BusinessHub(database)
    pos = PosService(PosConfig(max_document_bytes=200_000), "store", "UTC", hub, PresenceLog(), None)
    access_config = AccessConfig.model_validate(
        {"doors": [{"id": "D1", "camera": "cam1", "line_rule": "door"}], "max_body_bytes": 200_000}
    )
    access = AccessService(access_config, "store", hub, PresenceLog(), None)
    app = web.Application()
    app.router.add_post("/api/pos/events", pos_events_handler(lambda: pos))
    app.router.add_post("/api/pos/poslog", poslog_handler(lambda: pos))
    app.router.add_post("/api/access/events", access_events_handler(lambda: access))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        yield loop, client
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(pos.close())
        loop.run_until_complete(access.close())
        loop.run_until_complete(database.close())
        loop.close()


def _answered(loop: asyncio.AbstractEventLoop, client: TestClient[Any, Any], path: str, body: bytes) -> None:
    async def post() -> tuple[int, bytes]:
        async with client.post(path, data=body, headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.read()

    status, raw = loop.run_until_complete(post())
    assert status in (202, 400, 413, 422), (status, raw[:300])
    answer = json.loads(raw)
    if "error" in answer:  # the request as a whole: not JSON, too large, too many items, too deep
        assert status in (400, 413) and answer["error"]
    else:  # item by item (the door webhook answers 400 when none was good, the POS ones 422)
        assert set(answer) >= {"accepted", "duplicates", "rejected"}
        assert status == 202 or answer["rejected"]
        assert len(raw) < 2_000_000  # the item cap bounds the answer
    assert VISA not in raw.decode()


WEBHOOKS = [
    ("/api/pos/events", _bodies(_transactions, "transactions")),
    ("/api/access/events", _bodies(_door_events, "events")),
    ("/api/pos/poslog", poslog_documents),
]


Webhooks = tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]]


@pytest.fixture(scope="module")
def webhooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhooks]:
    """One app for every example of the module (hypothesis runs many examples per test)."""
    with webhook_client(tmp_path_factory.mktemp("webhooks")) as both:
        yield both


@pytest.mark.parametrize(("path", "bodies"), WEBHOOKS, ids=[p for p, _ in WEBHOOKS])
@HTTP_FAST
@given(data=st.data())
def test_webhooks_answer_with_a_status_and_a_reason(
    webhooks: Webhooks, path: str, bodies: st.SearchStrategy[bytes], data: st.DataObject
) -> None:
    _answered(*webhooks, path, data.draw(bodies, label="body"))


@pytest.mark.slow
@pytest.mark.parametrize(("path", "bodies"), WEBHOOKS, ids=[p for p, _ in WEBHOOKS])
@HTTP_DEEP
@given(data=st.data())
def test_webhooks_answer_with_a_status_and_a_reason_many(
    webhooks: Webhooks, path: str, bodies: st.SearchStrategy[bytes], data: st.DataObject
) -> None:
    _answered(*webhooks, path, data.draw(bodies, label="body"))


def test_a_request_over_the_item_cap_is_refused_whole(webhooks: Webhooks) -> None:
    loop, client = webhooks

    def post(path: str, doc: Any) -> tuple[int, Any]:
        async def send() -> tuple[int, Any]:
            async with client.post(path, json=doc) as resp:
                return resp.status, await resp.json()

        return loop.run_until_complete(send())

    one = {"id": "1", "lane": "3", "type": "no_sale", "end": "2026-11-29T14:00:05+00:00"}
    status, body = post("/api/pos/events", [one] * 1001)
    assert status == 413 and "pos.max_transactions_per_request" in body["error"]
    status, body = post("/api/access/events", {"events": [{}] * 1001})
    assert status == 413 and "access.max_events_per_request" in body["error"]
    status, body = post("/api/pos/events", {"lines": [[[[[[[[]]]]]]]] * 5})
    assert status == 422  # shallow enough to validate: rejected by field
    status, body = post("/api/pos/events", json.loads("[" * 40 + "]" * 40))
    assert status == 400 and body["error"] == "body nests deeper than 32 levels"
    status, body = post("/api/access/events", {"door": "D1", "kind": "granted", "time": "9999-12-31T23:59:59-23:59"})
    assert status == 400 and "body.time: Value error, 9999-12-31T23:59:59-23:59 is outside 1970-2999" in str(body)

"""The console's and API's security (plugin/web/auth) through the real application over HTTP: who may call which
route (table-driven, every role, tokens and sessions), CSRF, the Host allow list, the security headers on every
response, tokens only in the Authorization header and never short, sessions that end, the sign-in throttle, store
scope, HTTPS with a certificate made here, and the audit log."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from components.nx_emulator import self_signed_cert
from conftest import require
from helpers import seed_incident

from plugin.app import access_ctx, add_intake_routes, auth_ctx, build_app, database_ctx, new_app, sinks_ctx
from plugin.config.loader import parse_config
from plugin.errors import ConfigError
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.web.auth.middleware import ROUTE_GUARDS
from plugin.web.auth.roles import BRIDGE_ROLES
from plugin.web.auth.sessions import session_key
from plugin.web.auth.store import AuditEntry
from plugin.web.auth.transport import server_ssl_context
from plugin.web.auth.users import Actor, add_user
from plugin.web.keys import AUTH, DATABASE
from plugin.web.routes import setup_routes

ADMIN_TOKEN = "admin-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
INGEST_TOKEN = "ingest-token-0123456789"
PASSWORDS = {"alice": "alice-password-1", "victor": "victor-password-1", "sam": "sam-password-12"}
TEST_ACTOR = Actor("test", "cli", "local")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def web_doc(tmp_path: Path, **web_keys: Any) -> dict[str, Any]:
    """A config with the three tokens (admin, viewer, ingest), on a free port."""
    tokens = [{"name": "grafana", "role": "viewer", "token": VIEWER_TOKEN},
              {"name": "pos-integrator", "role": "ingest", "token": INGEST_TOKEN}]  # fmt: skip
    web_section = {"port": free_port(), "token": ADMIN_TOKEN, "tokens": tokens} | web_keys
    return {"storage": {"path": str(tmp_path / "data")}, "web": web_section}


@dataclass
class Served:
    app: web.Application
    base: str
    storage: Path


@asynccontextmanager
async def serve(
    doc: dict[str, Any], full: bool = False, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Served]:
    """The application serving on 127.0.0.1 with users alice (admin), victor (viewer) and sam (admin of another
    store only). `full`: build_app, every context (Triton needed); else the database, auth, sinks and access."""
    config = parse_config(doc)
    if full:
        app = build_app(config)
    else:
        app = new_app(config)
        app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx, access_ctx])
        setup_routes(app)
        add_intake_routes(app)
    runner = web.AppRunner(app)
    try:
        await runner.setup()
        store = app[AUTH].store
        for name, role, stores in (("alice", "admin", []), ("victor", "viewer", []), ("sam", "admin", ["store-99"])):
            if await store.get_user(name) is None:  # a second start on the same storage keeps them
                await add_user(store, BRIDGE_ROLES, TEST_ACTOR, name, role, PASSWORDS[name], stores)
        await web.TCPSite(runner, "127.0.0.1", config.web.port, ssl_context=ssl_context).start()
        scheme = "https" if ssl_context else "http"
        yield Served(app, f"{scheme}://127.0.0.1:{config.web.port}", config.storage.path)
    finally:
        await runner.cleanup()


def browser(**kw: Any) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (an IP address: aiohttp's jar wants unsafe=True for that)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kw)


CSRF_VALUE = re.compile(r'name="csrf_token" value="([^"]*)"')


async def sign_in(http: aiohttp.ClientSession, base: str, name: str, password: str, **kw: Any) -> str:
    """Sign in through the form as a browser does; the page's CSRF token for later mutating calls."""
    async with http.get(f"{base}/login", **kw) as resp:
        [form_csrf] = CSRF_VALUE.findall(await resp.text())
    form = {"username": name, "password": password, "csrf_token": form_csrf, "next": "/"}
    async with http.post(f"{base}/login", data=form, allow_redirects=False, **kw) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/"
    async with http.get(f"{base}/", **kw) as resp:
        assert resp.status == 200
        csrfs = set(CSRF_VALUE.findall(await resp.text()))  # the sign-out form's and each verdict form's: one token
    [csrf] = csrfs
    return csrf


def assert_security_headers(resp: aiohttp.ClientResponse, what: str) -> None:
    """The security headers every response carries."""
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, f"{what}: {name} is {resp.headers.get(name)!r}"
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, f"{what}: CSP {csp!r}"


# ------------------------------------------------------------------------------------------------ who may do what

OK, LOGIN = "ok", "login"  # passed the guard (any status but 401/403 and a redirect to sign in); sent to sign in
# method, path (with {incident}, {camera}), and the expected outcome for: anonymous, ingest, viewer, admin
ROUTE_TABLE: list[tuple[str, str, str | int, str | int, str | int, str | int]] = [
    ("GET", "/", LOGIN, 403, OK, OK),
    ("GET", "/snapshots/{incident}.jpg", 401, 403, OK, OK),
    ("GET", "/healthz", OK, OK, OK, OK),
    ("GET", "/readyz", OK, OK, OK, OK),
    ("GET", "/metrics", 401, 403, OK, OK),
    ("GET", "/api/incidents", 401, 403, OK, OK),
    ("GET", "/api/incidents/{incident}", 401, 403, OK, OK),
    ("GET", "/api/incidents/{incident}/feedback", 401, 403, OK, OK),
    ("POST", "/api/incidents/{incident}/feedback", 401, 403, OK, OK),  # a viewer gives verdicts too
    ("GET", "/api/outbox", 401, 403, OK, OK),
    ("POST", "/api/outbox/retry", 401, 403, 403, OK),
    ("GET", "/audit", LOGIN, 403, 403, OK),
    ("GET", "/cameras/{camera}/zones", LOGIN, 403, 403, OK),  # the zone editor: admins only
    ("GET", "/cameras/{camera}/picture.jpg", 401, 403, 403, OK),
    ("GET", "/static/zone-editor.js", 401, 403, 403, OK),
    ("GET", "/api/cameras/{camera}/zones", 401, 403, 403, OK),
    ("POST", "/api/cameras/{camera}/zones", 401, 403, 403, OK),
    ("GET", "/api/audit", 401, 403, 403, OK),
    ("POST", "/api/pos/poslog", 401, OK, 403, OK),
    ("POST", "/api/pos/events", 401, OK, 403, OK),
    ("POST", "/api/access/events", 401, OK, 403, OK),
    ("GET", "/login", OK, OK, OK, OK),
    ("POST", "/login", 403, 403, 403, 403),  # public, but without the sign-in form's own CSRF value: refused
    ("POST", "/logout", 401, OK, OK, OK),  # last: it ends a user's session
]


def test_every_route_declares_its_permission(tmp_path: Path) -> None:
    """Every route the bridge registers is in the guard table, and the table above covers them all."""
    app = build_app(parse_config(web_doc(tmp_path)))
    guards = app[ROUTE_GUARDS]
    registered = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    assert registered and registered <= set(guards), registered - set(guards)
    tested = {(m, p.replace("{incident}", "{id}")) for m, p, *_ in ROUTE_TABLE}
    assert {(m, p) for m, p in registered if m != "HEAD"} == tested


@pytest.mark.triton
async def test_each_role_on_each_route(triton: EmbeddedTriton, tmp_path: Path) -> None:
    """Table-driven: anonymous, and each role as a bearer token and as a signed-in user, on every route of the
    whole application; the security headers on every answer; /readyz's details only with status:read."""
    incident = seed_incident(tmp_path / "data")
    doc = web_doc(tmp_path) | {"triton": {"url": triton.grpc_url}}
    wrong: list[str] = []
    async with serve(doc, full=True) as served:
        callers: list[tuple[str, int, dict[str, str], str | None]] = [
            ("anonymous", 0, {}, None),
            ("ingest token", 1, {"Authorization": f"Bearer {INGEST_TOKEN}"}, None),
            ("viewer token", 2, {"Authorization": f"Bearer {VIEWER_TOKEN}"}, None),
            ("admin token", 3, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, None),
            ("viewer user", 2, {}, "victor"),
            ("admin user", 3, {}, "alice"),
        ]
        for who, column, headers, user in callers:
            async with browser() as http:
                if user is not None:
                    csrf = await sign_in(http, served.base, user, PASSWORDS[user])
                    headers = {"X-CSRF-Token": csrf}
                for method, path, *expected in ROUTE_TABLE:
                    url = served.base + path.format(incident=incident.id, camera="cam1")
                    async with http.request(method, url, headers=headers, allow_redirects=False, json={}) as resp:
                        body = await resp.read()
                        assert_security_headers(resp, f"{who} {method} {path}")
                        to_login = resp.status == 303 and resp.headers["Location"].startswith("/login?next=")
                        got: str | int = LOGIN if to_login else resp.status if resp.status in (401, 403) else OK
                        if got != expected[column]:
                            wrong.append(f"{who} {method} {path}: {got} ({resp.status}), expected {expected[column]}")
                        if path == "/readyz":
                            detailed = "cameras" in (await resp.json())
                            if detailed != (column >= 2):
                                wrong.append(f"{who} /readyz: details shown {detailed}")
                        if got == 401 and "WWW-Authenticate" not in resp.headers:
                            wrong.append(f"{who} {method} {path}: 401 without WWW-Authenticate")
                        if path.startswith("/snapshots") and got == OK:
                            assert body[:2] == b"\xff\xd8"
    assert not wrong, "\n".join(wrong)


async def test_tokens_only_in_the_authorization_header(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, aiohttp.ClientSession() as http:
        for query in (f"token={ADMIN_TOKEN}", f"access_token={ADMIN_TOKEN}", "TOKEN=x"):
            async with http.get(f"{served.base}/api/incidents?{query}") as resp:
                assert resp.status == 401
                assert "only in the Authorization header" in (await resp.json())["error"]
        for header in (f"Basic {ADMIN_TOKEN}", "Bearer ", f"Bearer {ADMIN_TOKEN}x", ADMIN_TOKEN):
            async with http.get(f"{served.base}/api/incidents", headers={"Authorization": header}) as resp:
                assert resp.status == 401, header
        async with http.get(f"{served.base}/api/incidents", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 200  # the scheme is case-insensitive (RFC 7235)


def test_short_tokens_are_refused_naming_the_key(tmp_path: Path) -> None:
    secret = "short-secret-15"  # 15 characters
    with pytest.raises(ConfigError, match=r"web\.token: string should have at least 16 characters") as info:
        parse_config({"web": {"token": secret}})
    assert secret not in str(info.value)
    tokens = [{"name": "pos", "role": "ingest", "token": secret}]
    with pytest.raises(ConfigError, match=r"web\.tokens\[0\]\.token: string should have at least 16") as info:
        parse_config({"web": {"tokens": tokens}})
    assert secret not in str(info.value)
    with pytest.raises(ConfigError, match=r"web\.tokens\[0\]\.role: input should be 'admin', 'viewer' or 'ingest'"):
        parse_config({"web": {"tokens": [{"name": "pos", "role": "root", "token": "x" * 16}]}})
    same = [{"name": "a", "role": "ingest", "token": "x" * 16}, {"name": "b", "role": "viewer", "token": "x" * 16}]
    with pytest.raises(ConfigError, match=r"web\.tokens: two tokens have the same secret"):
        parse_config({"web": {"tokens": same}})


async def test_a_short_token_from_the_environment_or_file_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = {"storage": {"path": str(tmp_path / "data")}}
    monkeypatch.setenv("STORESIGHT_API_TOKEN", "too-short")
    with pytest.raises(ConfigError, match=r"\$STORESIGHT_API_TOKEN: a token needs at least 16 characters"):
        async with serve(doc):
            pass
    monkeypatch.delenv("STORESIGHT_API_TOKEN")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "api_token").write_text("short\n")
    with pytest.raises(ConfigError, match=r"api_token: a token needs at least 16 characters"):
        async with serve(doc):
            pass


# ------------------------------------------------------------------------------------------------ CSRF, Host, headers


async def test_csrf_is_required_for_every_mutating_console_request(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        base = served.base
        csrf = await sign_in(http, base, "alice", PASSWORDS["alice"])
        retry = f"{base}/api/outbox/retry"
        async with http.post(retry, json={}) as resp:
            assert resp.status == 403 and "CSRF" in (await resp.json())["error"]
        async with http.post(retry, json={}, headers={"X-CSRF-Token": csrf + "x"}) as resp:
            assert resp.status == 403
        async with http.post(retry, data={"csrf_token": "nope"}) as resp:
            assert resp.status == 403
        evil = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        async with http.post(retry, json={}, headers=evil) as resp:
            assert resp.status == 403 and "Origin" in (await resp.json())["error"]
        async with http.post(retry, json={}, headers={"X-CSRF-Token": csrf, "Origin": base}) as resp:
            assert resp.status == 200
        async with http.post(retry, data={"csrf_token": csrf}) as resp:  # a form field does as well as the header
            assert resp.status == 200
        async with http.post(f"{base}/logout", data={}, allow_redirects=False) as resp:
            assert resp.status == 403  # a cross-site page cannot sign people out either
        async with http.post(f"{base}/logout", data={"csrf_token": csrf}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login"
        async with http.get(f"{base}/", allow_redirects=False) as resp:
            assert resp.status == 303  # signed out
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        # the sign-in form has its own CSRF value: a form posted from elsewhere (no cookie, or another value) fails
        form = {"username": "alice", "password": PASSWORDS["alice"], "csrf_token": "forged"}
        async with http.post(f"{served.base}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 403 and "expired or came from another site" in await resp.text()
        async with http.get(f"{served.base}/login") as resp:
            [form["csrf_token"]] = CSRF_VALUE.findall(await resp.text())
        cross = {"Origin": "http://evil.example"}
        async with http.post(f"{served.base}/login", data=form, headers=cross, allow_redirects=False) as resp:
            assert resp.status == 403
            [form["csrf_token"]] = CSRF_VALUE.findall(await resp.text())  # each form gets a new value
        async with http.post(f"{served.base}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
        # a bearer token is not sent by browsers on their own: no CSRF token needed
    async with serve(web_doc(tmp_path)) as served, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.post(f"{served.base}/api/outbox/retry", json={}, headers=auth) as resp:
            assert resp.status == 200


async def _raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send a hand-written request (a Host header a client library would not let us forge) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


async def test_requests_for_other_host_names_are_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page served as evil.example whose name then points at 127.0.0.1 reads nothing."""
    async with serve(web_doc(tmp_path, allowed_hosts=["store-042.example"])) as served, aiohttp.ClientSession() as http:
        port = int(served.base.rsplit(":", 1)[1])
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "store-042.example.evil"):
            for path in ("/", "/login", "/api/incidents"):
                async with http.get(f"{served.base}{path}", headers={"Host": host, **auth}) as resp:
                    assert resp.status == 400, (host, path)
                    assert "web.allowed_hosts" in await resp.text()
                    assert_security_headers(resp, f"Host {host}")
            # liveness probes address a container by its IP: /healthz answers them, and says nothing more
            async with http.get(f"{served.base}/healthz", headers={"Host": host}) as resp:
                assert resp.status == 200 and await resp.json() == {"status": "ok"}, host
        for host in ("127.0.0.1", f"localhost:{port}", f"[::1]:{port}", "STORE-042.example", "store-042.example."):
            async with http.get(f"{served.base}/api/incidents", headers={"Host": host, **auth}) as resp:
                assert resp.status == 200, host
        status, _ = await _raw_request(port, b"GET /login HTTP/1.0\r\n\r\n")  # no Host at all
        assert status == 400
        status, _ = await _raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert status == 200


def test_allowed_hosts_are_names_or_addresses_only() -> None:
    hosts = ["Store-042.Example", "192.168.1.20", "[fe80::1]", "fe80::2"]
    assert parse_config({"web": {"allowed_hosts": hosts}}).web.allowed_hosts == [h.lower() for h in hosts]
    for bad in ("https://store.example", "store.example:8443", "store.example/console", "*"):
        with pytest.raises(ConfigError, match=r"web\.allowed_hosts: .* is not a host name or address"):
            parse_config({"web": {"allowed_hosts": [bad]}})


async def test_security_headers_on_errors_and_pages(tmp_path: Path) -> None:
    """Beyond every route (the table test): an unknown path, a wrong method, the sign-in page's CSP nonce."""
    async with serve(web_doc(tmp_path)) as served, aiohttp.ClientSession() as http:
        async with http.get(f"{served.base}/no/such/page") as resp:
            assert resp.status == 404
            assert_security_headers(resp, "404")
        async with http.delete(f"{served.base}/healthz") as resp:
            assert resp.status == 405
            assert_security_headers(resp, "405")
        async with http.get(f"{served.base}/login") as resp:
            assert_security_headers(resp, "login")
            html = await resp.text()
            [nonce] = re.findall(r'<style nonce="([^"]+)">', html)
            assert f"style-src 'self' 'nonce-{nonce}'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["Cache-Control"] == "no-store"
            assert "Strict-Transport-Security" not in resp.headers  # plain HTTP on loopback: no HSTS
        async with http.get(f"{served.base}/login") as again:
            assert nonce not in again.headers["Content-Security-Policy"]  # a new nonce per response


# ------------------------------------------------------------------------------------------------ sessions, sign-in


async def test_sessions_are_stored_hashed_and_end(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        store = served.app[AUTH].store
        await sign_in(http, served.base, "alice", PASSWORDS["alice"])
        [cookie] = [c for c in http.cookie_jar if c.key == "storesight_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
        session_id = cookie.value
        key = session_key(session_id)
        session = await store.get_session(key)
        assert session is not None and session.user == "alice"
        db_bytes = await asyncio.to_thread((served.storage / "storesight.db").read_bytes)
        wal = served.storage / "storesight.db-wal"
        db_bytes += await asyncio.to_thread(wal.read_bytes) if wal.exists() else b""
        assert session_id.encode() not in db_bytes and key.encode() in db_bytes  # only the hash is stored
        user = await store.get_user("alice")
        assert user is not None and user.password_hash.startswith("$argon2id$")
        # idle for longer than web.session_idle_minutes (60): the next request is anonymous and the row gone
        await store.touch_session(key, datetime.now(UTC) - timedelta(minutes=61))
        async with http.get(f"{served.base}/", allow_redirects=False) as resp:
            assert resp.status == 303
            assert 'storesight_session=""' in resp.headers.get("Set-Cookie", "")  # the stale cookie is dropped
        assert await store.get_session(key) is None
        # past its absolute end (web.session_hours) even while in use
        await sign_in(http, served.base, "alice", PASSWORDS["alice"])
        [cookie] = [c for c in http.cookie_jar if c.key == "storesight_session"]
        key = session_key(cookie.value)
        session = await store.get_session(key)
        assert session is not None
        await store.remove_session(key)
        await store.add_session(replace(session, expires=datetime.now(UTC) - timedelta(seconds=1)))
        async with http.get(f"{served.base}/api/incidents") as resp:
            assert resp.status == 401
        # a new sign-in gets a new session id (no fixation)
        await sign_in(http, served.base, "alice", PASSWORDS["alice"])
        assert [c.value for c in http.cookie_jar if c.key == "storesight_session"] != [session_id]


async def test_wrong_passwords_are_throttled_per_address(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        auth = served.app[AUTH]
        async with http.get(f"{served.base}/login") as resp:
            [form_csrf] = CSRF_VALUE.findall(await resp.text())
        statuses = []
        for attempt in range(auth.settings.login_max_failures + 1):
            password = PASSWORDS["alice"] if attempt == auth.settings.login_max_failures else "wrong-password"
            form = {"username": "alice", "password": password, "csrf_token": form_csrf}
            async with http.post(f"{served.base}/login", data=form, allow_redirects=False) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert "Too many failed sign-ins" in await resp.text() and "Retry-After" in resp.headers
            async with http.get(f"{served.base}/login") as resp:
                [form_csrf] = CSRF_VALUE.findall(await resp.text())
        # ten failures, then even the right password is refused until the window passes
        assert statuses == [401] * auth.settings.login_max_failures + [429]
        rows = await auth.store.audit_entries(100)
        outcomes = [e.outcome for e in rows if e.action == "sign-in"]
        assert outcomes.count("wrong password") == 10 and outcomes[0] == "throttled"


async def test_unknown_users_and_other_stores(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        async with http.get(f"{served.base}/login") as resp:
            [form_csrf] = CSRF_VALUE.findall(await resp.text())
        form = {"username": "mallory", "password": "whatever-password", "csrf_token": form_csrf}
        async with http.post(f"{served.base}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 401 and "Wrong user name or password" in await resp.text()  # no hint which
        # sam may see store-99 only; this bridge is site "store"
        await sign_in_any(http, served.base, "sam", PASSWORDS["sam"])
        async with http.get(f"{served.base}/api/incidents") as resp:
            assert resp.status == 403 and "may not see store 'store'" in (await resp.json())["error"]
        # the next parameter never leaves the site
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            async with http.get(f"{served.base}/login", params={"next": target}) as resp:
                assert f'name="next" value="{target}"' not in await resp.text()


async def sign_in_any(http: aiohttp.ClientSession, base: str, name: str, password: str) -> None:
    """Sign in whatever the user may then see (no page read afterwards)."""
    async with http.get(f"{base}/login") as resp:
        [form_csrf] = CSRF_VALUE.findall(await resp.text())
    form = {"username": name, "password": password, "csrf_token": form_csrf}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303


# ------------------------------------------------------------------------------------------------ audit


async def test_audit_log_records_sign_ins_and_every_mutating_call(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, browser() as http, aiohttp.ClientSession() as plain:
        base, store = served.base, served.app[AUTH].store
        async with http.get(f"{base}/login") as resp:
            [form_csrf] = CSRF_VALUE.findall(await resp.text())
        bad = {"username": "alice", "password": "not-her-password", "csrf_token": form_csrf}
        async with http.post(f"{base}/login", data=bad, allow_redirects=False) as resp:
            assert resp.status == 401
        csrf = await sign_in(http, base, "alice", PASSWORDS["alice"])
        async with http.post(f"{base}/api/outbox/retry", json={}, headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
        async with plain.post(
            f"{base}/api/access/events", json={}, headers={"Authorization": f"Bearer {INGEST_TOKEN}"}
        ):
            pass
        async with plain.post(f"{base}/api/outbox/retry", json={}, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}):
            pass
        async with plain.post(f"{base}/api/outbox/retry", json={}):
            pass
        async with http.get(f"{base}/api/audit") as resp:
            assert resp.status == 200
            rows = await resp.json()
        async with http.get(f"{base}/audit") as resp:
            page = await resp.text()
            assert resp.status == 200 and page.count('class="entry"') == len(rows)
        async with http.post(f"{base}/logout", data={"csrf_token": csrf}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with plain.get(f"{base}/api/audit", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}) as resp:
            assert resp.status == 403  # admins only
        entries = await store.audit_entries(100)
    seen = [(e.actor, e.actor_kind, e.role, e.action, e.target, e.outcome) for e in reversed(entries)]
    assert ("alice", "user", None, "sign-in", "alice", "wrong password") in seen
    assert ("alice", "user", "admin", "sign-in", "alice", "ok") in seen
    assert ("alice", "user", "admin", "POST /api/outbox/retry", "/api/outbox/retry", "200") in seen
    assert ("pos-integrator", "token", "ingest", "POST /api/access/events", "/api/access/events", "404") in seen
    assert ("grafana", "token", "viewer", "POST /api/outbox/retry", "/api/outbox/retry", "403") in seen
    assert ("anonymous", "anonymous", None, "POST /api/outbox/retry", "/api/outbox/retry", "401") in seen
    assert ("alice", "user", "admin", "sign-out", "alice", "ok") in seen
    assert ("test", "cli", None, "user-add", "victor", "ok") in seen
    assert all(e.remote in ("127.0.0.1", "local") for e in entries)
    assert all(abs(e.time - datetime.now(UTC)) < timedelta(minutes=5) for e in entries)
    # GET requests are not audited (only changes and sign-ins)
    assert not [e for e in entries if e.action.startswith("GET")]


async def test_an_audit_write_failure_never_fails_the_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The audit row is written after the call; when the database refuses it, the error is logged loudly."""
    async with serve(web_doc(tmp_path)) as served, aiohttp.ClientSession() as http:
        db = served.app[DATABASE]
        await db.call(db.sync.conn.execute, "DROP TABLE audit_log")
        async with http.post(f"{served.base}/api/outbox/retry", json={}, headers={"Authorization":
                             f"Bearer {ADMIN_TOKEN}"}) as resp:  # fmt: skip
            assert resp.status == 200
    assert "audit: could not store POST /api/outbox/retry" in caplog.text


async def test_first_admin_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORESIGHT_ADMIN_PASSWORD", "first-admin-password")
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        await sign_in(http, served.base, "admin", "first-admin-password")
        assert not (served.storage / "initial-admin-password").exists()
        [entry] = [e for e in await served.app[AUTH].store.audit_entries(50) if e.action == "user-add" and
                   e.target == "admin"]  # fmt: skip
        assert (entry.actor, entry.action, entry.outcome) == ("storesight", "user-add", "ok")
    monkeypatch.setenv("STORESIGHT_ADMIN_PASSWORD", "short")
    with pytest.raises(ConfigError, match=r"\$STORESIGHT_ADMIN_PASSWORD: a password needs at least 10 characters"):
        async with serve(web_doc(tmp_path / "other")):
            pass


async def test_first_admin_generated_into_a_private_file(tmp_path: Path) -> None:
    async with serve(web_doc(tmp_path)) as served, browser() as http:
        path = served.storage / "initial-admin-password"
        assert path.stat().st_mode & 0o777 == 0o600
        await sign_in(http, served.base, "admin", path.read_text().strip())
    first = path.read_text()
    async with serve(web_doc(tmp_path)) as again:  # a second start keeps the users it has: no new admin password
        assert path.read_text() == first
        assert [u.name for u in await again.app[AUTH].store.list_users()] == ["admin", "alice", "sam", "victor"]


# ------------------------------------------------------------------------------------------------ HTTPS


def test_a_bind_beyond_loopback_needs_tls_or_an_explicit_opt_out(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "", "192.168.1.20", "store-pc", "::"):
        with pytest.raises(ConfigError, match=r"web\.tls: the console listens beyond loopback") as info:
            parse_config({"web": {"host": host}})
        assert "web.allow_plain_http: true" in str(info.value)
    assert parse_config({"web": {"host": "0.0.0.0", "allow_plain_http": True}}).web.host == "0.0.0.0"
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert parse_config({"web": {"host": "0.0.0.0", "tls": {"cert": str(cert), "key": str(key)}}}).web.tls
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert parse_config({"web": {"host": host}}).web.host == host
    with pytest.raises(ConfigError, match=r"web\.tls\.cert: .*c\.pem is not a readable file"):
        server_ssl_context(cert, key)


async def test_https_with_the_operators_certificate(tmp_path: Path) -> None:
    import shutil

    require(None if shutil.which("openssl") else "openssl is not installed (it makes the test's certificate)")
    cert, key = self_signed_cert(tmp_path)
    doc = web_doc(tmp_path, tls={"cert": str(cert), "key": str(key)})
    context = server_ssl_context(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    async with serve(doc, ssl_context=context) as served:
        assert served.base.startswith("https://")
        async with browser(connector=aiohttp.TCPConnector(ssl=client_tls)) as http:
            async with http.get(f"{served.base}/login") as resp:
                assert resp.status == 200
                assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
                assert "__Host-storesight_login=" in resp.headers["Set-Cookie"]
                assert "Secure" in resp.headers["Set-Cookie"]
            await sign_in(http, served.base, "alice", PASSWORDS["alice"])
            [cookie] = [c for c in http.cookie_jar if c.key == "__Host-storesight_session"]
            assert cookie["secure"] and cookie["httponly"] and cookie["path"] == "/"
            async with http.get(f"{served.base}/api/incidents") as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession() as http:  # the certificate is not trusted without being told
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(f"{served.base}/healthz"):
                    pass
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the HTTPS port
                async with http.get(served.base.replace("https://", "http://") + "/healthz") as resp:
                    await resp.read()


def test_audit_entries_keep_every_field(tmp_path: Path) -> None:
    """The SQLite store gives back what it was given (time zone, nulls, paging)."""

    async def main() -> list[list[AuditEntry]]:
        from plugin.incidents.database import AsyncDatabase
        from plugin.web.auth.sqlite import SqliteAuthStore

        db = AsyncDatabase(tmp_path / "a.db")
        store = SqliteAuthStore(db)
        t = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
        for i in range(5):
            await store.add_audit(AuditEntry(t, f"u{i}", "user", None if i else "admin", "x", "/y", "200", None,
                                             "d" if i == 2 else None))  # fmt: skip
        pages = [await store.audit_entries(2)]
        pages.append(await store.audit_entries(2, pages[0][-1].id))
        await db.close()
        return pages

    first, second = asyncio.run(main())
    assert [e.actor for e in first + second] == ["u4", "u3", "u2", "u1"]
    assert first[0].time == datetime(2026, 12, 1, 9, 30, tzinfo=UTC) and first[0].remote is None
    assert second[0].detail == "d"

"""`storesight users` and `storesight audit` as an operator runs them: passwords from the environment, stdin or a
prompt (never argv), changes that end the sessions they make stale, the audit log printed; and `run` refusing a
plain-HTTP bind beyond loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from helpers import run_cli, write_config

from plugin.app import auth_ctx, database_ctx, new_app, sinks_ctx
from plugin.config.loader import parse_config
from plugin.inference.server import free_port
from plugin.web.routes import setup_routes

PASSWORD = "operator-password-1"


def cli(*args: str, password: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`storesight ARGS` with $STORESIGHT_PASSWORD set when given, stdin fed (never a terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "STORESIGHT_PASSWORD"}
    if password is not None:
        env["STORESIGHT_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", *args], input=stdin or "", capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def test_users_from_add_to_remove_and_the_audit_log(tmp_path: Path) -> None:
    config = write_config(tmp_path / "store.yaml", {"storage": {"path": str(tmp_path / "data")}})
    c = str(config)
    added = cli("users", "add", "olivia", "--role", "viewer", "-c", c, password=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added olivia (viewer, stores *)"
    scoped = cli("users", "add", "mike", "--role", "admin", "--stores", "store-2,store-1", "-c", c,
                 stdin="mike-password-1\n")  # fmt: skip
    assert scoped.returncode == 1 and "--password-stdin" in scoped.stderr  # no terminal, no env: not guessed
    scoped = cli("users", "add", "mike", "--role", "admin", "--stores", "store-2,store-1", "--password-stdin", "-c", c,
                 stdin="mike-password-1\n")  # fmt: skip
    assert scoped.returncode == 0, scoped.stderr
    again = cli("users", "add", "olivia", "--role", "admin", "-c", c, password=PASSWORD)
    assert again.returncode == 1 and "user 'olivia' exists already" in again.stderr
    short = cli("users", "add", "tim", "--role", "viewer", "-c", c, password="short")
    assert short.returncode == 1 and "a password needs at least 10 characters" in short.stderr
    bad_role = cli("users", "add", "tim", "--role", "root", "-c", c, password=PASSWORD)
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr
    bad_name = cli("users", "add", "tim smith", "--role", "viewer", "-c", c, password=PASSWORD)
    assert bad_name.returncode == 1 and "user name 'tim smith'" in bad_name.stderr

    listed = cli("users", "list", "--json", "-c", c)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["role"], r["stores"]) for r in rows] == [
        ("mike", "admin", ["store-1", "store-2"]),
        ("olivia", "viewer", ["*"]),
    ]
    role = cli("users", "role", "olivia", "--role", "admin", "--stores", "*", "-c", c)
    assert role.returncode == 0 and "olivia is now admin (stores *)" in role.stdout
    passwd = cli("users", "passwd", "olivia", "--password-stdin", "-c", c, stdin="another-password-2\n")
    assert passwd.returncode == 0 and "password of olivia changed" in passwd.stdout
    removed = cli("users", "remove", "mike", "-c", c)
    assert removed.returncode == 0 and "removed mike" in removed.stdout
    gone = cli("users", "remove", "mike", "-c", c)
    assert gone.returncode == 1 and "no user 'mike'" in gone.stderr

    audit = cli("audit", "--json", "-c", c)
    assert audit.returncode == 0, audit.stderr
    acts = [(e["action"], e["target"], e["outcome"], e["actor_kind"], e["remote"]) for e in json.loads(audit.stdout)]
    assert acts[::-1] == [
        ("user-add", "olivia", "ok", "cli", "local"),
        ("user-add", "mike", "ok", "cli", "local"),
        ("user-add", "olivia", "exists", "cli", "local"),
        ("user-role", "olivia", "ok", "cli", "local"),
        ("user-passwd", "olivia", "ok", "cli", "local"),
        ("user-remove", "mike", "ok", "cli", "local"),
    ]
    assert all(e["actor"].startswith("cli:") for e in json.loads(audit.stdout))
    text = cli("audit", "-c", c)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 6 and "user-passwd" in text.stdout
    everything = "".join(p.stdout + p.stderr for p in (added, scoped, listed, role, passwd, audit, text))
    assert PASSWORD not in everything and "another-password-2" not in everything and "mike-password-1" not in everything


async def test_a_changed_password_ends_the_sessions(tmp_path: Path) -> None:
    """The bridge running, a user signed in; `users passwd` from another process ends the session at once."""
    storage = tmp_path / "data"
    doc = {"storage": {"path": str(storage)}, "web": {"port": free_port()}}
    config_file = write_config(tmp_path / "store.yaml", doc)
    app = new_app(parse_config(doc))
    app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx])
    setup_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", doc["web"]["port"]).start()
    base = f"http://127.0.0.1:{doc['web']['port']}"
    initial = storage / "initial-admin-password"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{base}/login") as resp:
                form_csrf = (await resp.text()).split('name="csrf_token" value="')[1].split('"')[0]
            form = {"username": "admin", "password": initial.read_text().strip(), "csrf_token": form_csrf}
            async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
                assert resp.status == 303
            async with http.get(f"{base}/api/incidents") as resp:
                assert resp.status == 200
            done = cli("users", "passwd", "admin", "-c", str(config_file), password="new-admin-password")
            assert done.returncode == 0, done.stderr
            assert "1 session(s) ended" in done.stdout and f"deleted {initial}" in done.stdout
            assert not initial.exists()  # the first password's file goes with it
            async with http.get(f"{base}/api/incidents") as resp:
                assert resp.status == 401
    finally:
        await runner.cleanup()


def test_run_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    config = write_config(tmp_path / "store.yaml", {"storage": {"path": str(tmp_path / "data")}})
    refused = run_cli("run", "-c", str(config), "--listen", f"0.0.0.0:{free_port()}", timeout=60)
    assert refused.returncode == 2
    assert "--listen: tls: the console listens beyond loopback (web.host '0.0.0.0') without HTTPS" in refused.stderr
    assert "web.allow_plain_http: true" in refused.stderr
    in_file = write_config(tmp_path / "lan.yaml", {"web": {"host": "192.168.1.20"}})
    refused = run_cli("run", "-c", str(in_file), timeout=60)
    assert refused.returncode == 2 and "lan.yaml: web.tls: the console listens beyond loopback" in refused.stderr
    missing = write_config(tmp_path / "tls.yaml", {"web": {"host": "0.0.0.0", "tls": {"cert": "nope.pem",
                                                                                      "key": "nope.key"}}})  # fmt: skip
    refused = run_cli("run", "-c", str(missing), timeout=60)
    assert refused.returncode == 2 and "web.tls.cert: nope.pem is not a readable file" in refused.stderr

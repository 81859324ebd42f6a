"""Test helpers: running the real CLI, a real HTTP receiver for webhooks, writing configs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

HOLD_MAX_S = 120.0  # a held request a test forgot to release does not keep its thread for good


def run_cli(*args: str, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`storesight ARGS...` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    """Dump a config document to YAML."""
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 recording POSTs; it can fail the first N requests with a status, and hold
    every request unanswered until `hold` is set (a slow receiver whose slowness does not depend on the clock)."""

    def __init__(
        self,
        fail_first: int = 0,
        fail_status: int = 503,
        hold: threading.Event | None = None,
        port: int = 0,
        status: int = 200,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.hold = hold
        self.arrived = 0  # requests received, answered or still held
        self.status = status  # answer for requests past fail_first; change it while running
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.arrived += 1
                if outer.hold is not None:
                    outer.hold.wait(HOLD_MAX_S)
                with outer.lock:
                    if outer.fail_first > 0:
                        outer.fail_first -= 1
                        status = outer.fail_status
                    else:
                        status = outer.status
                    if status == 200:
                        outer.requests.append(
                            {
                                "key": self.headers.get("Idempotency-Key"),
                                "signature": self.headers.get("X-StoreSight-Signature"),
                                "raw": body,
                                "body": json.loads(body or b"{}"),
                                "at": time.monotonic(),
                            }
                        )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def keys(self) -> list[str]:
        """Idempotency keys of the accepted requests, in arrival order (duplicates kept)."""
        with self.lock:
            return [str(r["key"]) for r in self.requests]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

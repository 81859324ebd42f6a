"""Test helpers: running the real CLI, a real HTTP receiver for webhooks, writing configs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


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
    """A real HTTP server on 127.0.0.1 recording POSTs; it can fail the first N requests with a status."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    if outer.fail_first > 0:
                        outer.fail_first -= 1
                        status = outer.fail_status
                    else:
                        status = 200
                        outer.requests.append(
                            {"key": self.headers.get("Idempotency-Key"), "body": json.loads(body or b"{}")}
                        )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

"""HTTPS with the operator's certificate, and the Host names a listener answers to (DNS rebinding)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from plugin.config.service import LOOPBACK_NAMES, is_loopback
from plugin.errors import ConfigError


def default_allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host names answered: the loopback names always (a local health check), the configured ones; with none
    configured and a bind beyond loopback, the bind address when it is one address and this machine's names."""
    names = {*LOOPBACK_NAMES, *(n.lower().strip("[]") for n in extra)}
    if not extra and not is_loopback(bind_host):
        if bind_host not in ("", "0.0.0.0", "::"):
            names.add(bind_host.lower().strip("[]"))
        names.update(n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n)
    return frozenset(names)


def server_ssl_context(cert: Path, key: Path, key_name: str = "web.tls") -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer) with the operator's certificate chain and key; a clear error naming
    `key_name` when they cannot be loaded."""
    for what, path in (("cert", cert), ("key", key)):
        if not path.is_file():
            raise ConfigError(f"{key_name}.{what}: {path} is not a readable file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{key_name}: cannot load certificate {cert} with key {key}: {exc}") from None
    return context

"""`storesight vms test`: log in to each sink and write a clearly labelled test entry."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from plugin.config.loader import load_config
from plugin.config.root import Config
from plugin.errors import StoreSightError
from plugin.redact import redact_url

if TYPE_CHECKING:
    pass


async def _vms_test(config: Config, only: str | None) -> int:
    from plugin.app import build_sink
    from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
    from plugin.incidents.database import AsyncDatabase
    from plugin.protocols import SelfTestingSink

    chosen = [s for s in config.sinks if only is None or s.id == only]
    if not chosen:
        known = ", ".join(s.id for s in config.sinks) or "none"
        raise StoreSightError(f"no sink {only!r} in the config (sinks: {known})" if only else "the config has no sinks")
    database = AsyncDatabase(config.storage.path / "storesight.db")
    failures = 0
    try:
        for sink_config in chosen:
            sink = build_sink(sink_config, database)
            try:
                if not isinstance(sink, SelfTestingSink):
                    print(f"{sink.id} ({sink_config.kind}): no self-test for this kind")
                    continue
                detail = await sink.self_test()
                print(f"{sink.id} ({sink_config.kind}): OK: {detail}")
            except SinkAuthError as exc:
                failures += 1
                print(f"{sink.id} ({sink_config.kind}): FAILED (credentials): {redact_url(str(exc))}")
            except (SinkNotReady, SinkRejected, StoreSightError) as exc:
                failures += 1
                print(f"{sink.id} ({sink_config.kind}): FAILED: {redact_url(str(exc))}")
            finally:
                await sink.close()
    finally:
        await database.close()
    return 1 if failures else 0


def cmd_vms_test(args: argparse.Namespace) -> int:
    """Log in to each sink and write a labelled test entry."""
    return asyncio.run(_vms_test(load_config(args.config), args.sink))

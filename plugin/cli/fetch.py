"""`storesight models fetch` and `media fetch`: the pinned files the project fetches itself."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Put the model files in place."""
    from plugin.inference.assets import default_models_dir, fetch_models

    source = Path(args.from_dir) if args.from_dir else default_models_dir()
    repository = Path(args.repository) if args.repository else None
    for path in fetch_models(source, args.url, args.accept_sha256, repository, args.model or (), args.flavour):
        print(f"ok {path}")
    return 0


def cmd_media_fetch(args: argparse.Namespace) -> int:
    """Put the demo clip (or, with --vtest, OpenCV's vtest.avi for the scenario tests) in place."""
    from plugin.inference.assets import fetch_demo_media, fetch_vtest

    env = os.environ.get("STORESIGHT_MEDIA_DIR")
    source = Path(args.from_dir) if args.from_dir else (Path(env) if env else None)
    if args.vtest:
        print(fetch_vtest(source, Path(args.dest)))
        return 0
    print(fetch_demo_media(source, Path(args.dest)))
    return 0

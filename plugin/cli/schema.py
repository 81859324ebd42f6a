"""`storesight config schema`: the config's JSON Schema on stdout, for editors."""

from __future__ import annotations

import argparse
import json
import sys

from plugin.config.schema import config_schema


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the config file."""
    json.dump(config_schema(), sys.stdout, indent=2 if args.indent else None)
    sys.stdout.write("\n")
    return 0

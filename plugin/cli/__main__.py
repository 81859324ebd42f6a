"""`python -m plugin.cli`: the storesight command."""

from __future__ import annotations

import sys

from plugin.cli.main import main

sys.exit(main())

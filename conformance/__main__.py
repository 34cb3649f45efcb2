"""Command line: ``python -m came_conformance run --target T`` (conformance/cli.py; README "Exit codes")."""
from __future__ import annotations

import sys

from came_conformance.cli import main

if __name__ == "__main__":
    sys.exit(main())

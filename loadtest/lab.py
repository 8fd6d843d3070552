#!/usr/bin/env python3
"""Entry point of the lab: `python3 loadtest/lab.py <command> ...` (see loadtest/lab/cli.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""The agender live monitor: ``python app.py [--source FILE|URL|cam:N] [--kiosk] ...``.

Same options as ``agender gui`` (see ``python app.py --help`` and docs/gui.md).
"""
import sys

from agender.cli.gui import main

if __name__ == "__main__":
    sys.exit(main())

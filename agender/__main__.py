import sys

from agender.cli.main import main

sys.exit(main())

"""Entry point: `python -m deutzia_local up|run|demo|poll|replay|compact|reconcile`."""

import sys

from deutzia_local.cli import main

sys.exit(main())

"""`python -m etlkit` is the `etlkit` command."""

import sys

from etlkit.cli import main

sys.exit(main())

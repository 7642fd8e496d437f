"""`python -m trail.cli`: the `trail` command."""

import sys

from trail.cli import main

sys.exit(main())

"""`python -m benchlib` (what scripts/bench runs)."""

import sys

from benchlib.main import main

sys.exit(main())

"""`python -m chime_egress.cli ...`: the `chime-egress` command (the workers of `run` use it)."""

import sys

from . import main

sys.exit(main())

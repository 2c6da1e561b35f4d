"""``python -m agentlightning.cli``: the same as ``agl``."""

import sys

from agentlightning.cli import main

sys.exit(main())

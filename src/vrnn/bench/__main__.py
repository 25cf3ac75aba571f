"""``python -m vrnn.bench``: the same as ``vrnn benchmark``."""

import sys

from vrnn.bench.cli import main

sys.exit(main())

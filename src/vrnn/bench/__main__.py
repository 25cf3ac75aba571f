"""``python -m vrnn.bench``: the same as ``vrnn benchmark``."""

import sys

from vrnn.allocator import keep_freed_memory
from vrnn.bench.cli import main

keep_freed_memory()  # as `vrnn benchmark` runs (vrnn.allocator)
sys.exit(main())

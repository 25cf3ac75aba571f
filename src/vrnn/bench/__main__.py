"""``python -m vrnn.bench``: the same as ``vrnn benchmark``."""

import sys

from vrnn.bench.cli import main
from vrnn.host.allocator import keep_freed_memory

keep_freed_memory()  # as `vrnn benchmark` runs (vrnn.host.allocator)
sys.exit(main())

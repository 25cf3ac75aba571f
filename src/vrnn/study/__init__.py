"""Studies and reports: ``vrnn reproduce``, ``vrnn demo``, their tables, figures and HTML.

May import: everything but ``vrnn.bench`` and the command line."""

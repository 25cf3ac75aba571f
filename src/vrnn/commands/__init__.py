"""The library side of each subcommand (``evaluate``, ``sample``, ``analyse``, ``info``) and what
they write (pictures, audio, MIDI, text).

May import: everything but ``vrnn.study``, ``vrnn.bench`` and the command line."""

"""The package version, in the lowest layer so that every layer can record it (checkpoints
store it) without importing the package's top."""

__version__ = "0.1.0"

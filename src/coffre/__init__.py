"""Coffre: encrypted, deduplicated, verified backups for pharmacies and small health practices."""

__version__ = "0.1.0"
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)  # what this Coffre reads and writes

"""Coffre: encrypted, deduplicated, verified backups for pharmacies and small health practices."""

__version__ = "0.1.0"
FORMAT_VERSION = 1

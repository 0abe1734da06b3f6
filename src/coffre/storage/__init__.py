"""Storage: format-blind named blobs (local disk, memory) and wrappers around any backend.

A backend knows kinds, names and bytes, nothing about packs, keys or snapshots.
"""

from coffre.storage.base import KINDS, Backend, Handle

__all__ = ["KINDS", "Backend", "Handle"]

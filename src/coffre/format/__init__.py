"""Format: the byte layouts of trees, snapshots, pack headers, indexes, locks and trash
records, and their validation. Pure: bytes in, objects out, nothing trusted from storage."""

"""Ops: operations on an open repository — backup, restore, verify, check, forget, prune,
repair, and the snapshot lookups the commands share."""

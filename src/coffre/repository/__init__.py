"""Repository: config, key slots, packs, indexes, snapshots, locks and trash records
over a storage backend. Everything read from storage is authenticated and validated here."""

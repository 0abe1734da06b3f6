"""Crypto: key derivation, authenticated encryption of stored objects, keyed blob ids,
password and recovery-key wrapping of the master secret. Pure: no I/O."""

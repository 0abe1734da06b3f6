"""(being written: see /work/server-contract.md)"""

from __future__ import annotations

import argparse


def add_serve_options(p: argparse.ArgumentParser) -> None:
    pass


def cmd_serve(args: argparse.Namespace) -> int:
    raise NotImplementedError

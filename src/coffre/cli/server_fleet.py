"""(being written: see /work/server-contract.md)"""

from __future__ import annotations

import argparse


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pass

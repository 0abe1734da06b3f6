"""Rendering for people and for machines (--json): sizes, numbers, dates and durations in the
reader's language (English or French), lines on stdout and stderr, tables, JSON documents."""

from __future__ import annotations

import json
import sys
from typing import Any

# Sizes, counts, dates and durations in the reader's language (core/human.py: the lower
# layers use them too, for the dates in their messages).
from coffre.core.human import human_duration, human_number, human_size, human_time

__all__ = ["emit_json", "human_duration", "human_number", "human_size", "human_time", "say", "table",
           "warn"]


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def say(text: str) -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)

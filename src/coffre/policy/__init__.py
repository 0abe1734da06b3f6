"""Policy: pure decisions — which snapshots a retention policy keeps, which is 'latest', and
when a scheduled job is due."""

from coffre.policy.retention import (
    Decision,
    Policy,
    SnapInfo,
    apply_policy,
    apply_size_budget,
    format_duration,
    parse_duration,
    parse_size,
)
from coffre.policy.schedule import due_slot, last_slot_before, next_run

__all__ = [
    "Decision",
    "Policy",
    "SnapInfo",
    "apply_policy",
    "apply_size_budget",
    "due_slot",
    "format_duration",
    "last_slot_before",
    "next_run",
    "parse_duration",
    "parse_size",
]

"""Policy: pure decisions — which snapshots a retention policy keeps, and which is 'latest'."""

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

__all__ = [
    "Decision",
    "Policy",
    "SnapInfo",
    "apply_policy",
    "apply_size_budget",
    "format_duration",
    "parse_duration",
    "parse_size",
]

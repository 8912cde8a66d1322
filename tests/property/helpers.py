"""Shared pieces of the property tests: profile-aware example counts and the checks
that every outcome is either a clean result or a ParatrainError."""

from __future__ import annotations

import os

THOROUGH = os.environ.get("PARATRAIN_HYPOTHESIS_PROFILE", "ci") == "thorough"

CLI_EXAMPLES = 40 if THOROUGH else 3
"""CLI properties start a Python process per example: few examples whatever the profile."""


def one_line(message: str) -> bool:
    return "\n" not in message.strip() and "Traceback" not in message

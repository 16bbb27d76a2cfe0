"""What happens on a denial: a kept import path; the module lives in ``guard/decision.py``.

from agentsudo_tokens.decision import ApprovalContext
"""

from __future__ import annotations

from .guard.decision import (
    ApprovalContext,
    Approver,
    OnDeny,
    Policy,
)
from .guard.decision import evaluate as evaluate  # public before the move, not in __all__

__all__ = [
    "ApprovalContext",
    "Approver",
    "OnDeny",
    "Policy",
]

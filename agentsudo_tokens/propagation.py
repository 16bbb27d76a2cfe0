"""Sessions across threads and processes: a kept path; the module is ``guard/propagation.py``.

from agentsudo_tokens.propagation import ContextThreadPoolExecutor
"""

from __future__ import annotations

from .guard.propagation import (
    ContextThreadPoolExecutor,
    agent_env,
    copy_session,
    current_token,
)

__all__ = [
    "ContextThreadPoolExecutor",
    "agent_env",
    "copy_session",
    "current_token",
]

"""Audit: events and sinks (``events``) and the hash-chained file (``file``).

from agentsudo_tokens.audit import set_audit_log
set_audit_log("audit.jsonl")        # every decision, chained; `agentsudo audit verify`
"""

from __future__ import annotations

from .events import LOGGER_NAME, AuditEvent, logger, set_audit_log
from .events import emit_session as emit_session  # public before the move, not in __all__
from .events import record as record

__all__ = ["LOGGER_NAME", "AuditEvent", "logger", "set_audit_log"]

"""Audit: events and sinks (``events``) and the hash-chained file (``file``).

from agentsudo_tokens.audit import set_audit_log
set_audit_log("audit.jsonl")        # every decision, chained; `agentsudo audit verify`
"""

from __future__ import annotations

from .events import LOGGER_NAME, AuditEvent, logger, set_audit_log

__all__ = ["LOGGER_NAME", "AuditEvent", "logger", "set_audit_log"]

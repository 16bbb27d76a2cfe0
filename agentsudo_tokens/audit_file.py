"""The hash-chained audit file: a kept import path; the module lives in ``audit/file.py``.

from agentsudo_tokens.audit_file import GENESIS
"""

from __future__ import annotations

from .audit.file import (
    GENESIS,
    MAX_LINE_BYTES,
    AuditFile,
    ChainReport,
    read_events,
    verify_chain,
)

__all__ = [
    "GENESIS",
    "MAX_LINE_BYTES",
    "AuditFile",
    "ChainReport",
    "read_events",
    "verify_chain",
]

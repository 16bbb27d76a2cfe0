"""The signed revocation list: a kept import path; the module is ``tokens/revocation_list.py``.

from agentsudo_tokens.revocation_list import LIST_TYPE
"""

from __future__ import annotations

from .tokens.revocation_list import (
    LIST_TYPE,
    MEDIA_TYPE,
    RevocationList,
    RevocationListSource,
    RevocationSource,
    build_revocation_list,
    parse_revocation_list,
)

__all__ = [
    "LIST_TYPE",
    "MEDIA_TYPE",
    "RevocationList",
    "RevocationListSource",
    "RevocationSource",
    "build_revocation_list",
    "parse_revocation_list",
]

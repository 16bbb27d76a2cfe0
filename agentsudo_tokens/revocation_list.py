"""The signed revocation list: a kept import path; the module is ``tokens/revocation_list.py``.

from agentsudo_tokens.revocation_list import LIST_TYPE
"""

from __future__ import annotations

# public before the move, not in __all__
from .tokens.revocation_list import (
    DEFAULT_LIST_TTL as DEFAULT_LIST_TTL,
)
from .tokens.revocation_list import (
    DEFAULT_MAX_STALE as DEFAULT_MAX_STALE,
)
from .tokens.revocation_list import (
    DEFAULT_REFRESH as DEFAULT_REFRESH,
)
from .tokens.revocation_list import (
    DEFAULT_TIMEOUT as DEFAULT_TIMEOUT,
)
from .tokens.revocation_list import (
    LIST_TYPE,
    MEDIA_TYPE,
    RevocationList,
    RevocationListSource,
    RevocationSource,
    build_revocation_list,
    parse_revocation_list,
)
from .tokens.revocation_list import (
    MAX_ENTRIES as MAX_ENTRIES,
)
from .tokens.revocation_list import (
    MAX_LIST_BYTES as MAX_LIST_BYTES,
)
from .tokens.revocation_list import (
    MAX_LIST_TTL as MAX_LIST_TTL,
)
from .tokens.revocation_list import (
    RETRY_INTERVAL as RETRY_INTERVAL,
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

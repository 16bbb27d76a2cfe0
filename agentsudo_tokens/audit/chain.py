"""The audit chain's line format: each line one strict JSON object, chained by hashes.

    fields["hash"] = line_hash(fields)             # over the rest, ``prev`` included
    fields, problem = parse_line(raw)              # None and why, for a line not strict JSON

Each line is one JSON object with the event's fields plus ``prev`` (the
``hash`` of the line before; ``GENESIS``, 64 zeros, for the first) and ``hash``
(SHA-256 of the line's canonical JSON without ``hash``). An edited line fails
its own hash; a removed or reordered line breaks the next line's ``prev``.
Lines are read as strictly as tokens (``jws``): one UTF-8 JSON object, no
whitespace around it, no duplicate keys, finite numbers only; a line is at most
``MAX_LINE_BYTES``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import MalformedTokenError
from ..tokens.jws import _SCAN  # the token parser's strict JSON: no duplicate keys, finite numbers

__all__ = ["GENESIS", "MAX_LINE_BYTES", "line_hash", "parse_line"]

GENESIS = "0" * 64
MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line (newline included) written or accepted: room for events of 1 MiB and more."""

_CANONICAL = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, sort_keys=True
).encode


def _canonical(fields: dict[str, Any]) -> bytes:
    return _CANONICAL(fields).encode()


def line_hash(fields: dict[str, Any]) -> str:
    """The hash a line carries: over its canonical JSON without ``hash`` (``prev`` included)."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """One line (without its newline) parsed strictly: the object, or None and why not."""
    try:
        document = line.decode("utf-8", errors="strict")
        value, end = _SCAN(document, 0)
    except MalformedTokenError as exc:
        if exc.expected == "unique":
            key = str(exc.found)
            shown = repr(key) if len(key) <= 40 else repr(key[:40]) + "..."
            return None, f"a duplicate JSON key {shown}"
        return None, "not valid JSON"
    except (ValueError, RecursionError, StopIteration):
        return None, "not valid JSON"
    if end != len(document):
        return None, "not valid JSON"
    if not isinstance(value, dict):
        return None, "not an audit event"
    return value, ""

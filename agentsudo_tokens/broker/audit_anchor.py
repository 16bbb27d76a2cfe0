"""The broker's last signed audit head, kept outside the audit file: cutting the log shows.

    anchor = AuditAnchor(store, audit_path)
    audit = BrokerAudit(audit_path, key, issuer=iss, on_head=anchor.keep)
    gap = anchor.check(keys)      # on start: is the file still as long as the kept head says?

A log cut back to an earlier signed head verifies by itself: every line it
keeps is chained and signed. The broker therefore also puts each head it signs
in its state store (a Redis store is on another machine), under a key of this
host and file, and serves it at ``GET /v1/audit/head``. On start, a file that
no longer reaches the kept head gets an ``audit_gap`` line, which fails
``agentsudo audit verify`` from then on; ``agentsudo audit verify --broker``
compares the file with the head the broker serves now.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AgentSudoError, UnknownKeyError
from .audit_verify import SignedHead, parse_head, verify_audit

if TYPE_CHECKING:
    from ..state import Store
    from ..tokens.jwks import KeySource

__all__ = ["ANCHOR_PREFIX", "AuditAnchor", "AuditGap"]

ANCHOR_PREFIX = "audit-head:"
_KEEP = 10 * 365 * 86400  # seconds: a head is kept as long as the log it anchors


@dataclass(frozen=True)
class AuditGap:
    """The file is shorter than the kept head says, or is another file."""

    expected_lines: int
    found_lines: int
    problem: str


class AuditAnchor:
    """The head kept in ``store`` for the audit file at ``path`` on this host."""

    def __init__(self, store: Store, path: str | os.PathLike[str]) -> None:
        self.store = store
        where = f"{socket.gethostname()}\0{Path(path).resolve()}"
        self.key = ANCHOR_PREFIX + hashlib.sha256(where.encode()).hexdigest()[:32]
        self.ready = False  # the file was checked against the kept head: heads may replace it

    def keep(self, head: str) -> None:
        """Keep ``head`` (a compact JWS) as the latest, once the file has been checked
        (before, a new head would replace the very one a cut is measured against).

        :raises StoreUnavailableError: the store cannot be written.
        """
        if self.ready:
            self.store.put(self.key, head, expires_at=time.time() + _KEEP)

    def latest(self) -> str | None:
        """The kept head, if any.

        :raises StoreUnavailableError: the store cannot be read.
        """
        return self.store.get(self.key)

    def check(self, path: str | os.PathLike[str], keys: KeySource) -> AuditGap | None:
        """Whether the file at ``path`` still holds the kept head (if any) at its place.

        :raises StoreUnavailableError: the store cannot be read.
        :raises ConfigError: the file cannot be read or trusted.
        """
        kept = self.latest()
        return None if kept is None else self.check_against(path, keys, kept)

    def check_against(
        self, path: str | os.PathLike[str], keys: KeySource, kept: str
    ) -> AuditGap | None:
        """Whether the file at ``path`` holds the head ``kept`` (read from the store) at its place.

        A kept head that does not verify with ``keys`` is a gap too: the store holds nothing
        but heads this broker signed.

        :raises ConfigError: the file cannot be read or trusted.
        """
        head: SignedHead | None
        try:
            head = parse_head(kept, keys)
        except UnknownKeyError:  # its key was retired while the broker was away
            head = _unverified(kept)
        except AgentSudoError as exc:
            return AuditGap(0, 0, f"the kept head does not verify: {exc}")
        if head is None:
            return AuditGap(0, 0, "the kept head is not an audit head")
        report = verify_audit(path, keys, anchor=head, check_heads=False)
        if report.ok or (report.bad_line is not None and report.bad_line > head.lines + 1):
            return None  # it holds the kept head whole; later faults `audit verify` reports
        return AuditGap(head.lines + 1, report.events, report.problem or "cut")


def _unverified(kept: str) -> SignedHead | None:
    """A kept head whose key is no longer published, read for its place alone: it was
    signed by this broker's key, and only the store (ours) held it."""
    from ..tokens.jws import decode_json_part, split

    try:
        parts = split(kept)
        header = decode_json_part(parts.header, "audit head header")
        claims = decode_json_part(parts.payload, "audit head payload")
    except AgentSudoError:
        return None
    chain, lines, iat = claims.get("chain"), claims.get("lines"), claims.get("iat")
    if not isinstance(chain, str) or type(lines) is not int or type(iat) is not int or lines < 0:
        return None
    return SignedHead(str(header.get("kid")), str(claims.get("iss")), iat, chain, lines)

"""The audit chain's state for the console: ``verify_audit`` over the broker's file, cached.

    state = ChainState(path)
    report, checked_at = state.report(keys, kept_head)   # at most every REFRESH seconds anew

Checking 10,000 lines takes some 60 ms, so a page never waits for it once a first
report exists: a stale report is shown (with when it was made) while a fresh one
is made in a thread for the next page.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import AgentSudoError
from ..audit_verify import AuditReport, parse_head, verify_audit

if TYPE_CHECKING:
    from ...tokens.jwks import KeySource

__all__ = ["REFRESH", "ChainState"]

REFRESH = 5.0  # seconds a report is shown before a fresh one is made (if the file changed)


class ChainState:
    """The last report on the broker's audit file, and when it was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._report: tuple[AuditReport | str, float, tuple[int, int, int]] | None = None
        self._lock = threading.Lock()
        self._busy = False

    def _seen(self) -> tuple[int, int, int]:
        try:
            info = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _check(self, keys: KeySource, kept: str | None) -> None:
        seen = self._seen()
        try:
            anchor = None
            if kept is not None:
                try:
                    anchor = parse_head(kept, keys)
                except AgentSudoError:
                    anchor = None  # a head of a retired key: the chain and its heads still count
            found: AuditReport | str = verify_audit(self.path, keys, anchor=anchor)
        except AgentSudoError as exc:
            found = str(exc)
        with self._lock:
            self._report = (found, time.time(), seen)
            self._busy = False

    def report(
        self, keys: KeySource, kept: Callable[[], str | None], *, wait: bool = False
    ) -> tuple[AuditReport | str, float]:
        """The latest report (a string: the file could not be checked) and when it was made.

        Made now when there is none yet (or ``wait``); else a fresh one is started in a
        thread when the shown one is older than ``REFRESH`` and the file changed.
        """
        with self._lock:
            current = self._report
            stale = current is None or (
                time.time() - current[1] >= REFRESH and self._seen() != current[2]
            )
            start = stale and not self._busy
            if start:
                self._busy = True
        if current is None or wait:
            self._check(keys, _kept_or_none(kept))
        elif start:
            threading.Thread(
                target=self._check, args=(keys, _kept_or_none(kept)), daemon=True
            ).start()
        with self._lock:
            done = self._report
        if done is None:
            return "not checked yet", time.time()
        return done[0], done[1]


def _kept_or_none(kept: Callable[[], str | None]) -> str | None:
    try:
        return kept()
    except AgentSudoError:  # the store is away: the file's own heads still say much
        return None

"""The console's live decision feed: the broker's audit file, followed, and events services forward.

    feed = Feed(Path("broker-audit.jsonl"))
    feed.refresh()                         # read what the broker appended since (bounded)
    latest, events = feed.since(0)         # sequence number of the newest, newest last
    feed.forward(events, source="credential:orders")   # checked by ``ForwardedEvent``

The file is read from a byte offset, complete lines only, at most ``MAX_READ``
bytes a call; a reader that fell more than ``MAX_BEHIND`` behind skips ahead to
the last ``START_BACK`` bytes (and says how many bytes it skipped), so memory
stays bounded however fast the broker writes. Events live in one ring of
``KEEP`` summaries, each numbered; a poller asks for those after the last number
it saw. A file cut or replaced (smaller, or another inode) is read again from its
end's last ``START_BACK`` bytes.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KEEP", "MAX_FORWARDED", "Feed", "ForwardedBatch", "ForwardedEvent"]

KEEP = 1000  # events kept for pollers
START_BACK = 256 * 1024  # bytes of history read when following starts
MAX_READ = 4 * 1024 * 1024  # bytes read at most in one refresh
MAX_BEHIND = 8 * 1024 * 1024  # bytes a reader may fall behind before it skips ahead
MAX_SENT = 500  # events in one answer to a poller (the page shows 500 rows)
MAX_FORWARDED = 100  # events in one forwarded batch
FIELD_TEXT = 256  # characters of a field kept
REASON_TEXT = 1000  # characters of a forwarded reason taken
_FIELDS = (
    "time", "outcome", "agent", "jti", "scope", "function", "reason", "caller",
    "request", "by", "approved", "kind", "action",
)  # fmt: skip
_SKIPPED = frozenset({"head"})  # signed heads: the chain's, not decisions

_Text = Annotated[str, Field(max_length=FIELD_TEXT)]


class ForwardedEvent(BaseModel):
    """One decision a service forwards: the fields of an audit event (``audit.events``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    time: _Text
    outcome: Annotated[str, Field(min_length=1, max_length=64)]
    agent: _Text | None = None
    jti: _Text | None = None
    scope: _Text | None = None
    function: _Text | None = None
    signed: bool | None = None
    reason: Annotated[str, Field(max_length=REASON_TEXT)] | None = None
    chain: list[_Text] | None = Field(default=None, max_length=16)
    prev: _Text | None = None  # a line of a chained file, forwarded as it is
    hash: _Text | None = None


class ForwardedBatch(BaseModel):
    """What ``POST /v1/console/events`` takes: at most ``MAX_FORWARDED`` events."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    events: list[ForwardedEvent] = Field(min_length=1, max_length=MAX_FORWARDED)


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= FIELD_TEXT else value[:FIELD_TEXT] + "..."
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, list):
        return [_clip(item) for item in value[:16] if isinstance(item, str)]
    return None


def summary(event: Mapping[str, Any], source: str) -> dict[str, Any]:
    """What the feed shows of one event: a few fields, clipped, and where it came from."""
    shown = {name: _clip(event[name]) for name in _FIELDS if event.get(name) is not None}
    chain = event.get("chain")
    if isinstance(chain, list) and len(chain) > 1:
        shown["chain"] = _clip(chain)
    shown["detail"] = detail(event)
    shown["source"] = source
    return shown


def detail(event: Mapping[str, Any]) -> str:
    """One line of what else an event says: request, reason, who answered, token."""
    parts = []
    if isinstance(event.get("request"), str):
        parts.append(f"request {event['request']}")
    if isinstance(event.get("approved"), bool):
        parts.append("approved" if event["approved"] else "denied")
    for name in ("by", "caller", "kind", "action", "reason", "jti"):
        if isinstance(event.get(name), str):
            parts.append(f"{name}: {event[name]}")
    chain = event.get("chain")
    if isinstance(chain, list) and len(chain) > 1:
        parts.append("chain: " + " > ".join(str(item) for item in chain[:16]))
    return _clip("; ".join(parts)) or ""


class Feed:
    """The audit file followed from a byte offset, and forwarded events, in one bounded ring."""

    def __init__(self, path: Path, *, keep: int = KEEP) -> None:
        self.path = path
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=keep)
        self._seq = 0
        self._offset: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()  # the ring
        self._reading = threading.Lock()  # one reader of the file at a time
        self.skipped_bytes = 0  # skipped ahead when a reader fell too far behind

    @property
    def latest(self) -> int:
        """The number of the newest event (0: none yet)."""
        return self._seq

    def _push(self, events: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for event in events:
                self._seq += 1
                self._events.append((self._seq, event))

    def forward(self, events: Iterable[ForwardedEvent], *, source: str) -> int:
        """Add events a service forwarded; how many."""
        shown = [summary(e.model_dump(exclude_none=True), f"forwarded by {source}") for e in events]
        self._push(shown)
        return len(shown)

    def since(self, after: int, limit: int = MAX_SENT) -> tuple[int, list[dict[str, Any]]]:
        """The newest number and the events after ``after`` (at most ``limit``, the newest)."""
        with self._lock:
            latest = self._seq
            if after >= latest:
                return latest, []
            newer = [{"seq": seq, **event} for seq, event in self._events if seq > after]
        return latest, newer[-limit:]

    def refresh(self) -> int:
        """Read what the broker appended since the last call (bounded); how many events.

        Another thread reading at the same moment does it for both: this one returns 0.
        """
        if not self._reading.acquire(blocking=False):
            return 0
        try:
            lines = self._read()
        finally:
            self._reading.release()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("outcome") not in _SKIPPED:
                events.append(summary(event, "broker"))
        self._push(events)
        return len(events)

    def _read(self) -> list[bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            info = os.fstat(fd)
            inode = (info.st_dev, info.st_ino)
            size = info.st_size
            if self._offset is None or inode != self._inode or size < self._offset:
                self._offset, self._inode = self._start(fd, size), inode
            elif size - self._offset > MAX_BEHIND:
                start = self._start(fd, size)
                self.skipped_bytes += start - self._offset
                self._offset = start
            data = os.pread(fd, min(MAX_READ, size - self._offset), self._offset)
        except OSError:
            return []
        finally:
            os.close(fd)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        return data[:end].split(b"\n")

    @staticmethod
    def _start(fd: int, size: int) -> int:
        """Where following starts: the first whole line in the last ``START_BACK`` bytes."""
        if size <= START_BACK:
            return 0
        back = size - START_BACK
        data = os.pread(fd, START_BACK, back)
        cut = data.find(b"\n")
        return size if cut < 0 else back + cut + 1

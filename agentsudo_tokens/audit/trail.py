"""Reading audit files as evidence: every event, and every line that is not one, said plainly.

    trail = Trail(["audit.jsonl", "broker-audit.jsonl"], since="2026-01-01T00:00:00Z")
    for event in trail.events(): ...       # valid events in time range, file by file
    trail.problems                         # ["audit.jsonl: line 7: a torn line ...", ...]
    trail.files                            # per file: events read, the chain's state

Unlike ``reading.read_events`` (which skips quietly), a torn line, a line that
is not strict JSON or not an audit event, a file that is not an audit log (its
first line is not an event) and a broken hash chain each become one line in
``problems``; a file that cannot be read is a problem too, never an exception.
An event's ``time``, ``outcome``, and the ``agent``, ``scope`` and ``function``
it names must be text (or absent); ``chain`` a list of text.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .chain import parse_line
from .reading import _lines, verify_chain

__all__ = ["FileState", "Trail", "parse_time"]

MAX_PROBLEMS = 50  # per file; then one line counts the rest
_TEXT_FIELDS = ("agent", "scope", "function", "reason", "by", "jti")


def parse_time(text: object) -> datetime.datetime | None:
    """An event's ``time`` (ISO 8601 with an offset) as an aware UTC datetime; None if it is
    not one, or if in UTC it falls outside years 1 to 9999 (``0001-01-01T00:00+01:00``)."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            return None
        return moment.astimezone(datetime.UTC)
    except (ValueError, OverflowError):
        return None


@dataclass
class FileState:
    """One file of the trail: how many events it gave, and its hash chain's state."""

    path: str
    events: int = 0
    readable: bool = True
    audit_log: bool = True
    chain_ok: bool | None = None  # None: not checked (unreadable, or not an audit log)
    chain: str = "not checked"  # one line: "intact, N events" or what broke it, where
    problems: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "events": self.events,
            "readable": self.readable,
            "audit_log": self.audit_log,
            "chain_ok": self.chain_ok,
            "chain": self.chain,
            "problems": self.problems,
        }


def _checked(fields: dict[str, Any]) -> str | None:
    """Why an object is not a usable event, or None."""
    if not isinstance(fields.get("outcome"), str) or not isinstance(fields.get("time"), str):
        return "not an audit event (no outcome or time)"
    if parse_time(fields["time"]) is None:
        return "not an audit event (time is not an ISO 8601 time with an offset, years 1-9999)"
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            return f"not an audit event ({name} is not text)"
    chain = fields.get("chain")
    if chain is not None and not (
        isinstance(chain, list) and all(isinstance(item, str) for item in chain)
    ):
        return "not an audit event (chain is not a list of names)"
    return None


@dataclass
class Trail:
    """The events of some audit files since a time, with every problem met on the way."""

    paths: Iterable[str | os.PathLike[str]]
    since: str | None = None  # ISO time: events before it are left out
    problems: list[str] = field(default_factory=list)
    files: list[FileState] = field(default_factory=list)

    def events(self) -> Iterator[dict[str, Any]]:
        """Each valid event in range, file after file; problems are collected as met."""
        since = parse_time(self.since) if self.since is not None else None
        for path in self.paths:
            state = FileState(str(path))
            self.files.append(state)
            yield from self._read(Path(path), state, since)
            if state.readable and state.audit_log:
                self._chain(Path(path), state)

    def _problem(self, state: FileState, text: str) -> None:
        state.problems += 1
        if state.problems <= MAX_PROBLEMS:
            self.problems.append(f"{state.path}: {text}")
        elif state.problems == MAX_PROBLEMS + 1:
            self.problems.append(f"{state.path}: more problems, not listed")

    def _read(
        self, path: Path, state: FileState, since: datetime.datetime | None
    ) -> Iterator[dict[str, Any]]:
        try:
            for number, raw in _lines(path, check_mode=False):
                if not raw.endswith(b"\n"):
                    self._problem(state, f"line {number}: a torn line (cut short, or too long)")
                    continue
                fields, why = parse_line(raw[:-1])
                if fields is not None:
                    why = _checked(fields) or ""
                if why:
                    if number == 1:
                        state.audit_log = False
                        self._problem(state, f"not an audit log: line 1 is {why}")
                        return
                    self._problem(state, f"line {number}: {why}")
                    continue
                assert fields is not None
                moment = parse_time(fields["time"])
                if since is not None and moment is not None and moment < since:
                    continue
                state.events += 1
                yield fields
        except ConfigError as exc:
            state.readable = False
            self._problem(state, f"cannot be read: {exc}")

    def _chain(self, path: Path, state: FileState) -> None:
        try:
            report = verify_chain(path)
        except ConfigError as exc:
            state.chain = f"not checked: {exc}"
            self._problem(state, f"hash chain not checked: {exc}")
            return
        state.chain_ok = report.ok
        if report.ok:
            state.chain = f"intact, {report.events} events"
            return
        state.chain = (
            f"BROKEN at line {report.bad_line}: {report.problem} "
            f"({report.events} events verified before it)"
        )
        self._problem(state, f"hash chain {state.chain}")

    @property
    def ok(self) -> bool:
        """True when every file was read whole and its chain holds."""
        return not self.problems and all(f.chain_ok for f in self.files)

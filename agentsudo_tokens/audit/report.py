"""Who did what: an audit trail summed up for a person (``report_html``) or a program (JSON).

    trail = Trail(paths, since=since)
    report = build_report(trail, since=since)     # reads the trail once
    json.dumps(report.to_dict()); render_html(report)

Per agent, calls by scope and outcome; the denials; the approvals and refusals
with their approvers (the broker's ``elevation_answered`` events name them in
``by``, a guard's ``approved`` event in its reason; both for one request are one
row); each file's hash chain;
decisions over time, for the chart; and every problem the trail had.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .trail import FileState, Trail, parse_time

__all__ = ["OUTCOMES", "Report", "build_report"]

OUTCOMES = ("allowed", "denied", "audit_violation", "approved", "refused")
MAX_ROWS = 500  # denials and approvals listed, the latest; the counts are whole
_APPROVER = re.compile(r"(?:approved|denied) by (.{1,200}) \((apr_[A-Za-z0-9_-]{1,64})\)$")


@dataclass
class Report:
    """A summed-up audit trail."""

    generated: str
    since: str | None
    files: list[FileState]
    problems: list[str]
    agents: dict[str, dict[str, dict[str, int]]]  # agent -> scope -> outcome -> calls
    denials: list[dict[str, Any]]
    denials_total: int
    approvals: list[dict[str, Any]]
    approvals_total: int
    timeline: dict[int, Counter[str]] = field(default_factory=dict)  # minute -> outcome counts

    @property
    def ok(self) -> bool:
        """True when the trail had no problem and every chain holds."""
        return not self.problems and all(f.chain_ok for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the chart as its buckets)."""
        return {
            "ok": self.ok,
            "generated": self.generated,
            "since": self.since,
            "files": [f.to_dict() for f in self.files],
            "problems": self.problems,
            "agents": self.agents,
            "denials": self.denials,
            "denials_total": self.denials_total,
            "approvals": self.approvals,
            "approvals_total": self.approvals_total,
            "timeline": [
                {"start": _iso(start), "seconds": size, **counts}
                for start, size, counts in buckets(self)
            ],
        }


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_SIZES = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
_EARLIEST = int(datetime.datetime(1, 1, 1, tzinfo=datetime.UTC).timestamp())


def _sizes(span: int, most: int) -> Iterator[int]:
    """Bucket widths to try, in seconds: the round ones, then whole days enough for ``span``."""
    yield from _SIZES
    days = max(31, -(-span // (most * 86400)))
    while True:
        yield days * 86400
        days += 1


def _grid(first: int, last: int, most: int) -> tuple[int, int, int]:
    """Bucket width, first bucket's start and count (seconds) for events from ``first`` to
    ``last``: the narrowest width that needs at most ``most`` buckets."""
    for size in _sizes(last - first + 60, most):
        start = first // size * size
        if start < _EARLIEST:  # a round start before year 1 is no time: start at the first
            start = first
        total = (last - start) // size + 1
        if total <= most:
            return size, start, total
    raise AssertionError("unreachable: widths grow without end")


def buckets(report: Report, most: int = 60) -> list[tuple[datetime.datetime, int, dict[str, int]]]:
    """Decisions over time: at most ``most`` equal buckets from the first to the last event,
    wider as the span grows (whole days past 30 days)."""
    if not report.timeline:
        return []
    most = max(most, 1)
    size, start, total = _grid(min(report.timeline) * 60, max(report.timeline) * 60, most)
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for minute, seen in report.timeline.items():
        counts[(minute * 60 - start) // size].update(seen)
    return [
        (
            datetime.datetime.fromtimestamp(start + i * size, datetime.UTC),
            size,
            {o: counts[i][o] for o in OUTCOMES},
        )
        for i in range(total)
    ]


def _approval(event: dict[str, Any]) -> dict[str, Any]:
    """An approval or refusal row, from a guard's event or the broker's answer."""
    outcome = event["outcome"]
    if outcome == "elevation_answered":
        approved = event.get("approved") is True
        by, request = event.get("by"), event.get("request")
    else:
        approved = outcome == "approved"
        match = _APPROVER.search(event.get("reason") or "")
        by, request = (match.group(1), match.group(2)) if match else (None, None)
    return {
        "time": event["time"],
        "agent": event.get("agent"),
        "scope": event.get("scope"),
        "function": event.get("function"),
        "approved": approved,
        "by": by if isinstance(by, str) else None,
        "request": request if isinstance(request, str) else None,
        "reason": event.get("reason"),
        "source": "broker" if outcome == "elevation_answered" else "guard",
    }


def _latest(rows: list[dict[str, Any]], row: dict[str, Any]) -> bool:
    """Add ``row``; True when older rows were let go to keep memory bounded."""
    rows.append(row)
    if len(rows) > 2 * MAX_ROWS:  # keep memory bounded: the latest MAX_ROWS by time
        rows.sort(key=lambda r: r["time"])
        del rows[:-MAX_ROWS]
        return True
    return False


@dataclass
class _Approvals:
    """Approval rows, one per request: the guard's ``approved`` and the broker's
    ``elevation_answered`` for one ``apr_`` id are one approval, shown once."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    answers: dict[str, bool] = field(default_factory=dict)  # every request seen -> approved
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # request -> its row in rows

    def add(self, row: dict[str, Any]) -> None:
        request = row["request"]
        if request is not None and self.answers.get(request) is row["approved"]:
            known = self.kept.get(request)
            if known is not None:  # else it was let go as old: counted already
                _merge(known, row)
            return
        self.total += 1  # a new request, or one whose two words disagree: both shown
        if request is not None:
            self.answers.setdefault(request, row["approved"])
            self.kept.setdefault(request, row)
        if _latest(self.rows, row):
            self.kept = {r["request"]: r for r in self.rows if r["request"] is not None}


def _merge(known: dict[str, Any], row: dict[str, Any]) -> None:
    """Fold ``row`` into ``known`` (same request, same answer): the broker's word on who
    answered and when comes first; what one side left out the other fills in."""
    first, second = (row, known) if row["source"] == "broker" else (known, row)
    merged = {k: first[k] if first[k] is not None else second[k] for k in known}
    merged["source"] = "+".join(sorted({*known["source"].split("+"), row["source"]}))
    known.update(merged)


def build_report(trail: Trail, *, since: str | None = None, now: str | None = None) -> Report:
    """Read ``trail`` once and sum it up."""
    agents: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    denials: list[dict[str, Any]] = []
    approvals = _Approvals()
    timeline: dict[int, Counter[str]] = defaultdict(Counter)
    denied_total = 0
    for event in trail.events():
        outcome = event["outcome"]
        if outcome in ("approved", "refused", "elevation_answered"):
            approvals.add(_approval(event))
        if outcome not in OUTCOMES:
            continue
        agent = event.get("agent") or "(no agent)"
        agents[agent][event.get("scope") or "-"][outcome] += 1
        moment = parse_time(event["time"])
        if moment is not None:
            timeline[int(moment.timestamp()) // 60][outcome] += 1
        if outcome == "denied":
            denied_total += 1
            row = {k: event.get(k) for k in ("time", "agent", "scope", "function", "reason")}
            _latest(denials, row)
    denials.sort(key=lambda r: r["time"])
    approvals.rows.sort(key=lambda r: r["time"])
    generated = now or _iso(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    return Report(
        generated=generated,
        since=since,
        files=trail.files,
        problems=trail.problems,
        agents={
            agent: {scope: dict(counts) for scope, counts in sorted(scopes.items())}
            for agent, scopes in sorted(agents.items())
        },
        denials=denials[-MAX_ROWS:],
        denials_total=denied_total,
        approvals=approvals.rows[-MAX_ROWS:],
        approvals_total=approvals.total,
        timeline=dict(timeline),
    )

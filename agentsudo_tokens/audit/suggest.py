"""Least privilege from evidence: the scopes an agent used, and the grants nobody used.

    usage = Usage.of(trail.events())                 # who used which scope, how
    print(suggestion(usage, "SupportBot").toml())    # [agents.SupportBot] scopes = [...]
    unused_grants({"SupportBot": ["read:*", "write:refunds"]}, usage)   # per agent

A scope is *used* by an ``allowed`` call or an ``audit_violation`` (audit mode
let a call through that its grants did not allow: the agent needed it). The
smallest set that would have allowed what the agent did is exactly the scopes
used: no wildcard is added, though the snippet says where one would cover
several. ``approved`` calls (a human said yes, one call at a time) are listed
apart, to stay in ``ask``. A grant is *exercised* when an ``allowed`` or
``approved`` call's scope matches it (wildcards too). Scopes outside the
grammar (a hostile line) are ignored.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidScopeError
from ..tokens.scopes import ScopeSet, validate_required_scope

__all__ = ["Suggestion", "Usage", "suggestion", "unused_grants"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+").fullmatch


def _scope(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return validate_required_scope(value)
    except InvalidScopeError:
        return None


@dataclass
class Usage:
    """Per agent, per scope: calls by outcome (``allowed``, ``audit_violation``, ...)."""

    calls: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)

    @classmethod
    def of(cls, events: Iterable[Mapping[str, Any]]) -> Usage:
        """Count the decisions among ``events``: the guard's, and the broker's answers to
        elevation requests (one approval counted once, from whichever file has it)."""
        usage: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        answered: set[str] = set()  # approvals counted, by request id: once, from either file
        for event in events:
            outcome, agent = event.get("outcome"), event.get("agent")
            scope = _scope(event.get("scope"))
            if outcome == "elevation_answered":  # the broker's audit: a human said yes (or no)
                outcome = "approved" if event.get("approved") is True else "refused"
                request = event.get("request")
            elif outcome in ("approved", "refused"):  # the guard's: "... by X (apr_...)"
                match = _REQUEST.search(str(event.get("reason") or ""))
                request = match.group(1) if match else None
            else:
                request = None
            if outcome not in _DECISIONS or not isinstance(agent, str) or scope is None:
                continue
            if isinstance(request, str):
                if request in answered:
                    continue
                answered.add(request)
            usage[agent][scope][outcome] += 1
        return cls({agent: dict(scopes) for agent, scopes in usage.items()})

    def scopes(self, agent: str, *outcomes: str) -> dict[str, int]:
        """The scopes ``agent`` reached with any of ``outcomes``, with how many calls."""
        found = {}
        for scope, counts in self.calls.get(agent, {}).items():
            total = sum(counts[o] for o in outcomes)
            if total:
                found[scope] = total
        return dict(sorted(found.items()))


_DECISIONS = frozenset({"allowed", "denied", "audit_violation", "approved", "refused"})
_REQUEST = re.compile(r"\((apr_[A-Za-z0-9_-]{1,64})\)$")


@dataclass(frozen=True)
class Suggestion:
    """The smallest scope set for one agent, and notes worth reading before granting it."""

    agent: str
    scopes: tuple[str, ...]
    allowed: int
    violations: dict[str, int]
    approved: dict[str, int]
    wildcards: dict[str, tuple[str, ...]]  # a pattern -> the used scopes it would cover

    def toml(self) -> str:
        """A policy snippet: ``[agents.NAME]`` and ``scopes``, with notes as comments."""
        key = self.agent if _BARE_KEY(self.agent) else json.dumps(self.agent)
        lines = [f"[agents.{key}]"]
        if self.scopes:
            listed = ", ".join(json.dumps(scope) for scope in self.scopes)
            lines.append(f"scopes = [{listed}]")
        else:
            lines.append("scopes = []  # no allowed call or audit-mode violation in the trail")
        if self.violations:
            shown = ", ".join(f"{s} ({n} calls)" for s, n in self.violations.items())
            lines.append(f"# from audit-mode violations (not granted then): {shown}")
        if self.approved:
            asked = ", ".join(json.dumps(scope) for scope in self.approved)
            lines.append(f"# approved by a human one call at a time; keep them so: ask = [{asked}]")
        for pattern, covered in self.wildcards.items():
            lines.append(
                f"# {pattern} would cover {', '.join(covered)} (not applied: it would also "
                "grant scopes never used)"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "scopes": list(self.scopes),
            "allowed_calls": self.allowed,
            "audit_violations": self.violations,
            "approved": self.approved,
            "wildcards": {k: list(v) for k, v in self.wildcards.items()},
        }


def _wildcards(scopes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Where ``prefix:*`` would stand for two or more used scopes."""
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for scope in scopes:
        prefix, _, _last = scope.rpartition(":")
        if prefix:
            by_prefix[prefix].append(scope)
    return {f"{p}:*": tuple(s) for p, s in sorted(by_prefix.items()) if len(s) > 1}


def suggestion(usage: Usage, agent: str) -> Suggestion:
    """The exact scopes ``agent`` used (allowed calls and audit-mode violations)."""
    allowed = usage.scopes(agent, "allowed")
    violations = usage.scopes(agent, "audit_violation")
    scopes = tuple(sorted(set(allowed) | set(violations)))
    return Suggestion(
        agent=agent,
        scopes=scopes,
        allowed=sum(allowed.values()),
        violations=violations,
        approved=usage.scopes(agent, "approved"),
        wildcards=_wildcards(scopes),
    )


def unused_grants(grants: Mapping[str, Sequence[str]], usage: Usage) -> dict[str, tuple[str, ...]]:
    """Per agent of ``grants``, the granted scopes (wildcards too) no allowed or approved
    call of that agent matched; agents with none unused are left out."""
    unused: dict[str, tuple[str, ...]] = {}
    for agent, granted in grants.items():
        exercised = usage.scopes(agent, "allowed", "approved")
        never = tuple(
            grant
            for grant in granted
            if not any(ScopeSet([grant]).allows(scope) for scope in exercised)
        )
        if never:
            unused[agent] = never
    return unused

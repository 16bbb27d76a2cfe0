"""Limits in the token: constraints on a call's arguments and budgets, per scope (RFC 9396).

    limits = Limits.parse(["write:refunds amount<=100 currency in USD,EUR"],
                          budgets=["write:refunds amount=500 calls=20"])
    issuer.issue("SupportBot", ["write:refunds"], limits=limits)
    claims.limits.check("write:refunds", {"amount": 5000, "currency": "USD"}, agent="SupportBot")
    # LimitExceededError: amount 5000 exceeds the token's limit 100 for write:refunds

The claim is ``authorization_details``, a list of entries of type
``agentsudo_limits``::

    {"type": "agentsudo_limits", "scope": "write:refunds",
     "constraints": [{"arg": "amount", "le": 100}, {"arg": "currency", "in": ["USD", "EUR"]}],
     "budget": {"calls": 20, "totals": {"amount": 500}}}

An entry applies to a call when its ``scope`` (a granted scope's grammar,
wildcards allowed) allows the call's scope; every entry that applies must hold.
Parsing is strict: an unknown type, member or constraint kind, a value of the
wrong type or out of range makes the token malformed (fail closed). Budget
counters are integers: ``calls``, and ``sum:<arg>`` in millionths of the
argument's unit (``UNIT``); the state store debits them (``state.budgets``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import BudgetExhaustedError, LimitExceededError
from .constraints import shown
from .limit_entry import (
    DETAIL_TYPE,
    MAX_CONSTRAINTS,
    UNIT,
    Budget,
    Limit,
    bad_limit,
    concerns,
    make_budget,
    make_constraint,
    text_value,
    units,
)
from .limits_text import parse_lines

__all__ = ["DETAIL_TYPE", "LIMITS_CLAIM", "UNIT", "Budget", "Limit", "Limits", "concerns"]

LIMITS_CLAIM = "authorization_details"  # RFC 9396
MAX_ENTRIES = 32
_ENTRY = frozenset({"type", "scope", "constraints", "budget"})
_BUDGET = frozenset({"calls", "totals"})
_MEMO_LIMIT = 256


class Limits:
    """A token's limits: its ``authorization_details`` entries, each with an id (its index)."""

    __slots__ = ("entries", "_memo")

    def __init__(self, entries: Iterable[Limit]) -> None:
        self.entries = tuple(entries)
        if not 1 <= len(self.entries) <= MAX_ENTRIES:
            raise bad_limit(f"expected 1 to {MAX_ENTRIES} limits, found {len(self.entries)}")
        self._memo: dict[str, tuple[tuple[str, Limit], ...]] = {}

    @classmethod
    def parse(cls, limits: Iterable[str] = (), *, budgets: Iterable[str] = ()) -> Limits:
        """Limits from the grammar (``--limit``, ``--budget``, a policy's lists).

        :raises InvalidLimitError: a line outside the grammar, with the reason.
        """
        return cls(parse_lines(limits, budgets))

    @classmethod
    def from_claim(cls, value: object) -> Limits:
        """The limits of a token's ``authorization_details`` claim, checked strictly.

        :raises InvalidLimitError: anything outside the format (the verifier makes
            it a ``MalformedTokenError``).
        """
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_ENTRIES:
            raise bad_limit(f"expected a list of 1 to {MAX_ENTRIES} entries", shown(value))
        return cls(_entry(item) for item in value)

    def claim(self) -> list[dict[str, Any]]:
        return [entry.claim() for entry in self.entries]

    def __iter__(self) -> Iterator[Limit]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and self.entries == other.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"Limits({[entry.text() for entry in self.entries]!r})"

    def for_scope(self, scope: str) -> tuple[tuple[str, Limit], ...]:
        """The entries (id, limit) that apply to a call needing ``scope``; memoized."""
        found = self._memo.get(scope)
        if found is None:
            found = tuple(
                (str(index), entry)
                for index, entry in enumerate(self.entries)
                if entry.applies_to(scope)
            )
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[scope] = found
        return found

    def arguments(self, scope: str) -> frozenset[str]:
        """The argument names the limits on ``scope`` read (constraints and budget totals)."""
        names: set[str] = set()
        for _, entry in self.for_scope(scope):
            names.update(c.argument for c in entry.constraints)
            if entry.budget is not None:
                names.update(name for name, _ in entry.budget.totals)
        return frozenset(names)

    def check(self, scope: str, arguments: Mapping[str, Any], *, agent: str | None = None) -> None:
        """Refuse a call needing ``scope`` whose ``arguments`` break a constraint.

        A constrained argument that is missing is refused too. Budgets are not
        debited here (``costs``, then the store).

        :raises LimitExceededError: the first constraint broken, with the value.
        """
        for _, entry in self.for_scope(scope):
            for constraint in entry.constraints:
                name = constraint.argument
                if name not in arguments:
                    problem = f"is missing; the token limits it ({constraint.text()})"
                else:
                    problem = constraint.problem(arguments[name])  # type: ignore[assignment]
                    if problem is None:
                        continue
                raise LimitExceededError(
                    f"{name} {problem} for {scope}",
                    argument=name,
                    limit=constraint.text(),
                    agent=agent,
                    scope=scope,
                    expected=constraint.text(),
                    found=shown(arguments.get(name)) if name in arguments else "missing",
                )

    def costs(
        self, scope: str, arguments: Mapping[str, Any], *, agent: str | None = None
    ) -> list[tuple[str, dict[str, int], dict[str, int]]]:
        """What a call needing ``scope`` spends: ``(entry id, amounts, limits)`` per budget.

        :raises BudgetExhaustedError: a budgeted argument missing, not a number, or < 0.
        """
        spends = []
        for entry_id, entry in self.for_scope(scope):
            budget = entry.budget
            if budget is None:
                continue
            amounts = {} if budget.calls is None else {"calls": 1}
            for name, _ in budget.totals:
                value = arguments.get(name)
                spent = units(value) if name in arguments else None
                if spent is None:
                    found = shown(value) if name in arguments else "missing"
                    what = f"{found} is not a number >= 0" if name in arguments else "is missing"
                    raise BudgetExhaustedError(
                        f"{name} {what}; the token budgets it for {scope}",
                        argument=name,
                        limit=f"{entry.scope} {budget.text()}",
                        agent=agent,
                        scope=scope,
                        expected="a number >= 0",
                        found=found,
                    )
                amounts["sum:" + name] = spent
            spends.append((entry_id, amounts, budget.counters()))
        return spends

    def budgeted_arguments(self, scope: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The values of the arguments the budgets on ``scope`` count (those given)."""
        return {
            name: arguments[name]
            for _, entry in self.for_scope(scope)
            if entry.budget is not None
            for name, _ in entry.budget.totals
            if name in arguments
        }

    @property
    def budgeted(self) -> tuple[tuple[str, Limit], ...]:
        """Every entry with a budget, with its id."""
        return tuple((str(i), e) for i, e in enumerate(self.entries) if e.budget is not None)


def _entry(item: object) -> Limit:
    if not isinstance(item, dict):
        raise bad_limit(f"expected each entry to be an object, found {shown(item)}", shown(item))
    extra = sorted(set(item) - _ENTRY)
    if extra or item.get("type") != DETAIL_TYPE or "scope" not in item:
        raise bad_limit(
            f"expected entries of type {DETAIL_TYPE!r} with scope, constraints, budget; "
            f"found type {shown(item.get('type'))}, members {', '.join(map(shown, extra)) or '-'}",
            sorted(map(shown, item)),
        )
    constraints = item.get("constraints", [])
    if not isinstance(constraints, list) or len(constraints) > MAX_CONSTRAINTS:
        raise bad_limit(f"constraints: expected a list of at most {MAX_CONSTRAINTS}")
    parsed = []
    for constraint in constraints:
        if not isinstance(constraint, dict) or len(constraint) != 2 or "arg" not in constraint:
            raise bad_limit("expected each constraint as {'arg': NAME, KIND: VALUE}")
        (kind,) = (key for key in constraint if key != "arg")
        parsed.append(make_constraint(constraint["arg"], kind, constraint[kind]))
    budget = None
    if "budget" in item:
        raw = item["budget"]
        if not isinstance(raw, dict) or not raw or set(raw) - _BUDGET:
            raise bad_limit("budget: expected an object of calls and totals")
        totals = raw.get("totals", {})
        if not isinstance(totals, dict) or ("totals" in raw and not totals):
            raise bad_limit("budget totals: expected an object of argument: total")
        budget = make_budget(raw.get("calls"), totals)
    return Limit(text_value(item["scope"], "scope"), tuple(parsed), budget)

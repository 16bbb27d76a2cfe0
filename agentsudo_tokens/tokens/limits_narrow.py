"""Narrowing limits: what a child token (or a caller's extra limits) may carry, within its parent's.

    carried = narrow_limits(parent.limits, ScopeSet(["write:refunds"]),
                            Limits.parse(["write:refunds amount<=50"],
                                         budgets=["write:refunds amount=100"]),
                            agent="Orchestrator")
    carried.limits        # the parent's constraints that may apply, then those asked
    carried.carves        # (parent entry id, parent entry, amounts): what the broker debits

Every entry of a token applies (intersection), so adding an entry can only
narrow. Still, an asked constraint that is looser than one held on the same
argument and an overlapping scope (``amount<=500`` under ``amount<=100``), or an
``eq``/``in`` value the holder refuses, is refused: it says something the token
would never allow. Bounds of another kind (``amount>=10`` under ``amount<=100``)
only add. A child copies every parent entry that could apply to its scopes,
without the budget: a budget is carved, never copied (a copy would be a fresh
budget). Each parent budget that could apply to the child's scopes needs a
budget asked for the child that covers every call the parent's would count,
with each of its counters; the child's amounts are then debited from the
parent's remainder at exchange time (``broker.exchange``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from ..errors import DelegationRefusedError, InvalidLimitError
from .constraints import Constraint
from .limit_entry import Limit, concerns, counter_figure
from .limits import Limits
from .scopes import ScopeSet, covered

__all__ = ["Carve", "NarrowedLimits", "counter_text", "looser", "narrow_limits", "over_budget"]

_UPPER = frozenset({"le", "lt"})
_LOWER = frozenset({"ge", "gt"})
_SETS = frozenset({"eq", "in"})


def _values(constraint: Constraint) -> tuple[object, ...]:
    value = constraint.value
    return value if isinstance(value, tuple) else (value,)


def _family(kind: str) -> str:
    return "upper" if kind in _UPPER else "lower" if kind in _LOWER else kind


def looser(asked: Constraint, held: Constraint) -> bool:
    """True when ``asked`` (on the same argument) would admit a value ``held`` refuses, as
    a bound of the same kind or a listed value; a constraint of another kind only adds."""
    if asked.argument != held.argument:
        return False
    if asked.kind in _SETS:
        return any(held.problem(value) is not None for value in _values(asked))
    family = _family(asked.kind)
    if family != _family(held.kind):
        return False
    mine, theirs = asked.value, held.value
    if family in ("upper", "lower"):
        a, h = Decimal(mine), Decimal(theirs)  # type: ignore[arg-type]
        strict = asked.kind in ("lt", "gt") or held.kind in ("le", "ge")
        if family == "upper":
            return not (a < h or (a == h and strict))
        return not (a > h or (a == h and strict))
    if family == "under":
        root = str(theirs).rstrip("/")
        return not (mine == theirs or str(mine).startswith(root + "/"))
    if family == "host_in":
        return not set(_values(asked)) <= set(_values(held))
    if family == "max_len":
        return int(mine) > int(theirs)  # type: ignore[arg-type]
    return True  # not reached: every kind has a family


def counter_text(name: str, value: int) -> str:
    """A store counter as a person reads it: ``calls 3``, ``amount 12.5`` (not millionths)."""
    return f"{name.removeprefix('sum:')} {counter_figure(name, value)}"


def _overlaps(a: str, b: str) -> bool:
    return concerns(a, ScopeSet([b]))


def _within(scope: str, pattern: str) -> bool:
    return covered(tuple(scope.split(":")), frozenset({tuple(pattern.split(":"))}))


def check_not_looser(asked: Limits, held: Iterable[Limit], *, whose: str) -> str | None:
    """The first asked constraint looser than one ``held`` (``whose``: the holder's name in
    the message), as one line; ``None`` when every one is within."""
    held = tuple(held)
    for entry in asked:
        for constraint in entry.constraints:
            for other in held:
                if not _overlaps(entry.scope, other.scope):
                    continue
                for bound in other.constraints:
                    if looser(constraint, bound):
                        return (
                            f"the limit {entry.scope} {constraint.text()} is looser than "
                            f"{whose} {other.scope} {bound.text()}"
                        )
    return None


def over_budget(asked: Limits, held: Iterable[Limit], *, whose: str) -> str | None:
    """The first asked budget counter above one of ``held``'s budgets on an overlapping scope,
    as one line; ``None`` when each is within."""
    for entry in asked:
        if entry.budget is None:
            continue
        mine = entry.budget.counters()
        for other in held:
            if other.budget is None or not _overlaps(entry.scope, other.scope):
                continue
            theirs = other.budget.counters()
            for name in sorted(set(mine) & set(theirs)):
                if mine[name] > theirs[name]:
                    return (
                        f"the budget {entry.scope} {counter_text(name, mine[name])} exceeds "
                        f"{whose} {other.scope} {counter_text(name, theirs[name])}"
                    )
    return None


@dataclass(frozen=True)
class Carve:
    """A child's share of one parent budget entry: debit ``amounts`` from entry ``entry_id``."""

    entry_id: str
    entry: Limit
    amounts: dict[str, int]


@dataclass(frozen=True)
class NarrowedLimits:
    """The child's limits (``None``: none apply) and the parent budgets to debit for it."""

    limits: Limits | None
    carves: tuple[Carve, ...]


def _covers(budget: Limit, parent: Limit, scopes: ScopeSet) -> bool:
    """True when ``budget`` applies to every call of ``scopes`` that ``parent`` applies to,
    and counts each of its counters."""
    assert parent.budget is not None and budget.budget is not None
    if not set(parent.budget.counters()) <= set(budget.budget.counters()):
        return False
    if _within(parent.scope, budget.scope):
        return True
    return all(
        _within(scope, budget.scope) for scope in scopes.scopes if _overlaps(parent.scope, scope)
    )


def _refuse(reason: str, message: str, agent: str) -> DelegationRefusedError:
    return DelegationRefusedError(message, reason=reason, agent=agent)


def narrow_limits(
    parent: Limits | None, scopes: ScopeSet, asked: Limits | None, *, agent: str
) -> NarrowedLimits:
    """The limits a child with ``scopes`` carries: the parent's that may apply, then ``asked``.

    :raises DelegationRefusedError: ``reason="limits"``: an asked limit looser than the
        parent's, or on a scope the child is not granted, or too many entries;
        ``reason="budget"``: a parent budget that applies with no child budget asked to
        cover it, or an asked budget above the parent's.
    """
    held = tuple(parent) if parent is not None else ()
    applying = [entry for entry in held if concerns(entry.scope, scopes)]
    copied = [Limit(e.scope, e.constraints, None) for e in applying if e.constraints]
    mine = tuple(asked) if asked is not None else ()
    for entry in mine:
        if not concerns(entry.scope, scopes):
            raise _refuse(
                "limits",
                f"the limit on {entry.scope} applies to none of the child's scopes "
                f"({scopes.claim()})",
                agent,
            )
    if asked is not None:
        wider = check_not_looser(asked, applying, whose="the parent token's")
        if wider is not None:
            raise _refuse("limits", wider, agent)
        above = over_budget(asked, applying, whose="the parent token's")
        if above is not None:
            raise _refuse("budget", above, agent)
    carves = []
    budgets = [entry for entry in mine if entry.budget is not None]
    for index, entry in enumerate(held):
        if entry.budget is None or not concerns(entry.scope, scopes):
            continue
        covering = [b for b in budgets if _covers(b, entry, scopes)]
        if not covering:
            names = " ".join(
                "calls=N" if name == "calls" else name.removeprefix("sum:") + "=N"
                for name in sorted(entry.budget.counters(), key=lambda n: (n == "calls", n))
            )
            raise _refuse(
                "budget",
                f"the parent token's budget on {entry.scope} ({entry.budget.text()}) applies "
                f"to the child's scopes: ask the child's share of it with "
                f"--budget '{entry.scope} {names}' (budgets=[...])",
                agent,
            )
        amounts = {
            name: min(b.budget.counters()[name] for b in covering)  # type: ignore[union-attr]
            for name in entry.budget.counters()
        }
        carves.append(Carve(str(index), entry, amounts))
    entries = [*copied, *mine]
    if not entries:
        return NarrowedLimits(None, tuple(carves))
    try:
        return NarrowedLimits(Limits(entries), tuple(carves))
    except InvalidLimitError as exc:
        raise _refuse("limits", f"the child's limits: {exc}", agent) from None

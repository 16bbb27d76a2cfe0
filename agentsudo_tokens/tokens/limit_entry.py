"""One limit entry: a scope's constraints and budget, checked as they are built.

    limit = Limit("write:refunds", (make_constraint("amount", "le", 100),),
                  make_budget(20, {"amount": 500}))
    limit.text()     # "write:refunds amount<=100"
    limit.claim()    # one authorization_details entry: type, scope, constraints, budget

Every value is checked on the way in (``InvalidLimitError`` with a one-line
reason): numbers finite, within +-10**12, at most 6 decimals; names Python
identifiers; roots absolute and normalized; hosts plain host names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..errors import InvalidLimitError, InvalidScopeError
from .constraints import ARGUMENT, BOUNDS, KINDS, MAX_NUMBER, Constraint, Value, as_number, shown
from .scopes import ScopeSet

__all__ = [
    "DETAIL_TYPE",
    "MAX_CONSTRAINTS",
    "UNIT",
    "Budget",
    "Limit",
    "bad_limit",
    "checked_number",
    "concerns",
    "counter_figure",
    "json_number",
    "make_budget",
    "make_constraint",
    "text_value",
    "overspent",
    "units",
]

DETAIL_TYPE = "agentsudo_limits"
UNIT = 10**6  # budget totals are counted in millionths of the argument's unit
MAX_CONSTRAINTS = 16
MAX_ITEMS = 64
MAX_TEXT = 256
MAX_LENGTH = 10**9
MAX_TOTALS = 15  # with calls, the 16 counters a store entry holds
MAX_TOTAL_NAME = 60  # its counter, sum:<name>, within the store's 64 characters
_HOST = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|[0-9a-f:.]*:[0-9a-f:.]*"  # an IPv6 literal, as urlsplit gives it: no brackets
).fullmatch


def bad_limit(message: str, found: object = None) -> InvalidLimitError:
    """The error for a limit outside the grammar: ``message`` in one line."""
    return InvalidLimitError(message, found=found)


def checked_number(value: object, what: str, *, minimum: Decimal = -MAX_NUMBER) -> Decimal:
    """``value`` as a bound or total: finite, within +-10**12, at most 6 decimals and 15 digits.

    :raises InvalidLimitError: anything else.
    """
    number = as_number(value)
    if number is None:
        raise bad_limit(f"{what}: expected a number, found {shown(value)}", shown(value))
    exponent = number.as_tuple().exponent
    digits = len(number.normalize().as_tuple().digits)
    if not minimum <= number <= MAX_NUMBER or not isinstance(exponent, int) or exponent < -6:
        raise bad_limit(
            f"{what}: expected a number from {minimum} to {MAX_NUMBER} with at most 6 decimals, "
            f"found {shown(value)}",
            shown(value),
        )
    if digits > 15:
        raise bad_limit(f"{what}: expected at most 15 significant digits, found {digits}", digits)
    return Decimal(format(number, "f"))  # no exponent: its text reads back as the grammar wants


def text_value(value: object, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_TEXT or not value.isprintable():
        raise bad_limit(
            f"{what}: expected printable text of 1 to {MAX_TEXT} characters, found {shown(value)}",
            shown(value),
        )
    return value


def _item(value: object, what: str) -> Value:
    """One value for ``eq`` or ``in``: a number, a string or a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return text_value(value, what)
    return checked_number(value, what)


def _items(value: object, what: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_ITEMS:
        raise bad_limit(f"{what}: expected a list of 1 to {MAX_ITEMS} values", shown(value))
    return tuple(value)


def _root(value: object, what: str) -> str:
    root = text_value(value, what)
    if not os.path.isabs(root) or "\x00" in root or os.path.normpath(root) != root.rstrip("/"):
        if root != "/":
            raise bad_limit(
                f"{what}: expected an absolute, normalized path (no '..', no '//'), "
                f"found {shown(value)}",
                shown(value),
            )
    return root if root == "/" else root.rstrip("/")


def make_constraint(argument: object, kind: str, value: object) -> Constraint:
    """A checked constraint of ``kind`` on ``argument``.

    :raises InvalidLimitError: an unknown kind, a bad argument name or value.
    """
    if type(argument) is not str or ARGUMENT(argument) is None:
        raise bad_limit(
            f"expected an argument name (a Python identifier), found {shown(argument)}",
            shown(argument),
        )
    what = f"{argument} {kind}"
    if kind in BOUNDS:
        return Constraint(argument, kind, checked_number(value, what))
    if kind == "eq":
        return Constraint(argument, kind, _item(value, what))
    if kind == "in":
        return Constraint(argument, kind, tuple(_item(item, what) for item in _items(value, what)))
    if kind == "under":
        return Constraint(argument, kind, _root(value, what))
    if kind == "host_in":
        hosts = tuple(text_value(item, what).lower().rstrip(".") for item in _items(value, what))
        for host in hosts:
            if _HOST(host) is None:
                raise bad_limit(f"{what}: expected host names, found {shown(host)}", shown(host))
        return Constraint(argument, kind, hosts)
    if kind == "max_len":
        if type(value) is not int or not 0 <= value <= MAX_LENGTH:
            raise bad_limit(f"{what}: expected a length of 0 to {MAX_LENGTH}", shown(value))
        return Constraint(argument, kind, value)
    raise bad_limit(
        f"unknown constraint kind {shown(kind)}; expected one of {', '.join(sorted(KINDS))}",
        shown(kind),
    )


@dataclass(frozen=True, slots=True)
class Budget:
    """What the token may spend on a scope in its lifetime: calls, and totals of arguments."""

    calls: int | None = None
    totals: tuple[tuple[str, Decimal], ...] = ()

    def counters(self) -> dict[str, int]:
        """The store's counters and their limits: ``calls``, ``sum:<arg>`` in millionths."""
        limits = {} if self.calls is None else {"calls": self.calls}
        for name, total in self.totals:
            limits["sum:" + name] = int(total * UNIT)
        return limits

    def text(self) -> str:
        """The budget as the grammar writes it, without the scope: ``amount=500 calls=20``."""
        words = [f"{name}={total}" for name, total in self.totals]
        return " ".join(words + ([] if self.calls is None else [f"calls={self.calls}"]))

    def claim(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.calls is None else {"calls": self.calls}
        if self.totals:
            out["totals"] = {name: json_number(total) for name, total in self.totals}
        return out


def make_budget(calls: object, totals: Mapping[str, object]) -> Budget:
    """A checked budget.

    :raises InvalidLimitError: nothing to count, a negative or huge count or total.
    """
    if calls is not None and (type(calls) is not int or not 0 <= calls <= MAX_NUMBER):
        raise bad_limit(f"budget calls: expected 0 to {MAX_NUMBER}, found {shown(calls)}")
    checked: list[tuple[str, Decimal]] = []
    if len(totals) > MAX_TOTALS:  # the store keeps at most 16 counters: calls and 15 totals
        raise bad_limit(f"budget: expected at most {MAX_TOTALS} totals, found {len(totals)}")
    for name, total in totals.items():
        if type(name) is not str or ARGUMENT(name) is None or len(name) > MAX_TOTAL_NAME:
            raise bad_limit(
                f"budget: expected an argument name of at most {MAX_TOTAL_NAME} characters, "
                f"found {shown(name)}",
                shown(name),
            )
        checked.append((name, checked_number(total, f"budget {name}", minimum=Decimal(0))))
    if calls is None and not checked:
        raise bad_limit("budget: expected calls=N or an argument's total (amount=500)")
    return Budget(calls if isinstance(calls, int) else None, tuple(sorted(checked)))


def json_number(number: Decimal) -> int | float:
    """A Decimal as JSON carries it: an int when whole, else a float (<= 15 digits: exact)."""
    return int(number) if number == number.to_integral_value() else float(number)


def _overlap(a: str, b: str) -> bool:
    """True when some concrete scope matches both patterns (``*``: one segment; ``**``: the
    last, one or more)."""
    first, second = a.split(":"), b.split(":")
    open_a, open_b = first[-1] == "**", second[-1] == "**"
    fixed_a = first[:-1] if open_a else first
    fixed_b = second[:-1] if open_b else second
    if not open_a and not open_b and len(first) != len(second):
        return False
    if open_a and not open_b and len(second) < len(fixed_a) + 1:
        return False
    if open_b and not open_a and len(first) < len(fixed_b) + 1:
        return False
    return all(x == y or "*" in (x, y) for x, y in zip(fixed_a, fixed_b, strict=False))


def concerns(pattern: str, granted: ScopeSet) -> bool:
    """True when a limit on ``pattern`` could apply to a call some granted scope allows."""
    return any(_overlap(pattern, scope) for scope in granted.scopes)


def units(value: object) -> int | None:
    """A budgeted argument's value in millionths, rounded up; ``None`` unless a number >= 0."""
    number = as_number(value)
    if number is None or number < 0 or number > MAX_NUMBER:
        return None
    return int((number * UNIT).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class Limit:
    """The limits on calls within ``scope``: constraints that each call must meet, a budget."""

    scope: str
    constraints: tuple[Constraint, ...] = ()
    budget: Budget | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_pattern", ScopeSet([self.scope]))
        except InvalidScopeError as exc:
            raise bad_limit(f"limit scope: {exc}", self.scope) from None
        if not self.constraints and self.budget is None:
            raise bad_limit(f"limit for {self.scope}: expected a constraint or a budget")
        if len(self.constraints) > MAX_CONSTRAINTS:
            raise bad_limit(f"limit for {self.scope}: at most {MAX_CONSTRAINTS} constraints")

    def applies_to(self, scope: str) -> bool:
        """True when a call needing ``scope`` falls under this limit."""
        pattern: ScopeSet = object.__getattribute__(self, "_pattern")
        return pattern.allows(scope)

    def text(self) -> str:
        """The constraints as the grammar writes them, scope first (``--limit``)."""
        return " ".join([self.scope, *(c.text() for c in self.constraints)])

    def claim(self) -> dict[str, Any]:
        """This limit as one ``authorization_details`` entry."""
        entry: dict[str, Any] = {"type": DETAIL_TYPE, "scope": self.scope}
        if self.constraints:
            entry["constraints"] = [_constraint_claim(c) for c in self.constraints]
        if self.budget is not None:
            entry["budget"] = self.budget.claim()
        return entry


def _constraint_claim(constraint: Constraint) -> dict[str, Any]:
    value: Any = constraint.value
    if isinstance(value, Decimal):
        value = json_number(value)
    elif isinstance(value, tuple):
        value = [json_number(v) if isinstance(v, Decimal) else v for v in value]
    return {"arg": constraint.argument, constraint.kind: value}


def counter_figure(counter: str, units_: int) -> str:
    """A counter's value as the grammar writes it: ``450``, ``12.5`` (not millionths)."""
    if counter == "calls":
        return str(units_)
    return f"{(Decimal(units_) / UNIT).normalize():f}"


def overspent(
    scope: str, amounts: Mapping[str, int], limits: Mapping[str, int], spent: Mapping[str, int]
) -> tuple[str, str, str]:
    """Why a debit is refused, in one wording wherever budgets are kept (a store, the broker):
    ``(argument, limit, line)`` for the first counter the call would take past its limit.

    ``write:refunds budget: amount 50 would pass the token's total 500 (20 left)``;
    ``write:refunds budget: the token's 20 calls are used``.
    """
    for counter, amount in sorted(amounts.items()):
        limit = limits.get(counter)
        if limit is None or spent.get(counter, 0) + amount <= limit:
            continue
        if counter == "calls":
            return (
                "calls",
                f"{scope} calls={limit}",
                f"{scope} budget: the token's {limit} calls are used",
            )
        name = counter.removeprefix("sum:")
        left = counter_figure(counter, max(0, limit - spent.get(counter, 0)))
        total = counter_figure(counter, limit)
        return (
            name,
            f"{scope} {name}={total}",
            f"{scope} budget: {name} {counter_figure(counter, amount)} would pass the token's "
            f"total {total} ({left} left)",
        )
    return "calls", f"{scope} budget", f"{scope} budget: this call would overspend it"

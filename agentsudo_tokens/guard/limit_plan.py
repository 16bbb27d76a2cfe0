"""The fast part of checking a token's limits on a guarded call: where each argument is,
and a quick test per constraint.

    spots = Spots(process_refund)                 # once, when @sudo is applied
    plan = spots.plan(limits, "write:refunds")    # once per token (limits) and function
    plan.passes(args, kwargs)                     # True: every constraint holds, no budget

``Limits.check`` builds a Decimal per number and words per value; most calls
pass, so each constraint also gets a quick test that is exact where it says
yes (an ``int`` against an integral bound, a ``str`` in a set of strings, the
length of a ``str``) and says "don't know" (``False``) for anything else: then
``Limits.check`` decides, and words the refusal. An argument is read by
position, keyword or default as ``inspect.Signature.bind`` would, without
binding the call (~3 us).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..tokens.constraints import Constraint
    from ..tokens.limits import Limits

__all__ = ["MISSING", "Plan", "Spots", "quick_test"]

MISSING: Any = object()  # an argument the call does not give and has no default for
_NOWHERE = sys.maxsize  # the position of an argument that can only come by keyword
_Test = Callable[[Any], bool]


def _never(value: object) -> bool:
    return False


def _integral(number: object) -> int | None:
    if isinstance(number, Decimal) and number == number.to_integral_value():
        return int(number)
    return None


def quick_test(constraint: Constraint) -> _Test:
    """A test that is True only when ``constraint.problem(value)`` is ``None``; False: ask it."""
    kind, limit = constraint.kind, constraint.value
    bound = _integral(limit)
    if kind in ("le", "lt", "ge", "gt") and bound is not None:
        tests: dict[str, _Test] = {
            "le": lambda v: type(v) is int and v <= bound,
            "lt": lambda v: type(v) is int and v < bound,
            "ge": lambda v: type(v) is int and v >= bound,
            "gt": lambda v: type(v) is int and v > bound,
        }
        return tests[kind]
    if kind in ("in", "eq"):
        items = limit if isinstance(limit, tuple) else (limit,)
        texts = frozenset(item for item in items if type(item) is str)
        ints = frozenset(n for n in map(_integral, items) if n is not None)
        return lambda v: (type(v) is str and v in texts) or (type(v) is int and v in ints)
    if kind == "max_len" and type(limit) is int:
        longest = limit
        return lambda v: type(v) is str and len(v) <= longest
    return _never  # paths, hosts, fractional bounds: the full check


class Plan:
    """The limits on one scope, as one guarded function reads them."""

    __slots__ = ("limits", "scope", "reads", "names", "budgeted")

    def __init__(
        self,
        limits: Limits,
        scope: str,
        reads: tuple[tuple[int, str, bool, Any, _Test], ...],
        budgeted: bool,
    ) -> None:
        self.limits = limits
        self.scope = scope
        self.reads = reads  # (position, name, by keyword, default, quick test)
        self.names = tuple(dict.fromkeys(read[1] for read in reads))
        self.budgeted = budgeted

    def passes(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """True when every constraint surely holds; False: check with ``Limits.check``."""
        count = len(args)
        for position, name, keyword, default, test in self.reads:
            if position < count:
                value = args[position]
            elif keyword and name in kwargs:
                value = kwargs[name]
            else:
                value = default
            if not test(value):
                return False
        return True

    def arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments the limits read, by name (a missing one is absent)."""
        found: dict[str, Any] = {}
        count = len(args)
        for position, name, keyword, default, _ in self.reads:
            if position < count:
                found[name] = args[position]
            elif keyword and name in kwargs:
                found[name] = kwargs[name]
            elif default is not MISSING:
                found[name] = default
        return found


class Spots:
    """Where each parameter of a function comes from: (position, by keyword, default)."""

    __slots__ = ("func", "spots", "any_keyword", "_last")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.spots: dict[str, tuple[int, bool, Any]] | None = None  # read at the first plan
        self.any_keyword = False  # **kwargs: a name that is no parameter may come in it
        self._last: tuple[Limits, str, Plan | None] | None = None

    def _read(self) -> dict[str, tuple[int, bool, Any]]:
        spots: dict[str, tuple[int, bool, Any]] = {}
        try:
            parameters = inspect.signature(self.func).parameters.values()
        except (TypeError, ValueError):  # no signature: every limited argument reads as missing
            return spots
        for position, parameter in enumerate(parameters):
            kind = parameter.kind
            if kind is parameter.VAR_KEYWORD:
                self.any_keyword = True
            if kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            default = MISSING if parameter.default is parameter.empty else parameter.default
            at = _NOWHERE if kind is parameter.KEYWORD_ONLY else position
            spots[parameter.name] = (at, kind is not parameter.POSITIONAL_ONLY, default)
        return spots

    def _spot(self, name: str) -> tuple[int, bool, Any]:
        if self.spots is None:
            self.spots = self._read()
        return self.spots.get(name, (_NOWHERE, self.any_keyword, MISSING))

    def plan(self, limits: Limits, scope: str) -> Plan | None:
        """How this function's calls meet ``limits`` on ``scope``; ``None`` when none apply."""
        last = self._last
        if last is not None and last[0] is limits and last[1] == scope:
            return last[2]
        entries = limits.for_scope(scope)
        if not entries:
            self._last = (limits, scope, None)
            return None
        reads = []
        budgeted = False
        for _, entry in entries:
            for constraint in entry.constraints:
                position, keyword, default = self._spot(constraint.argument)
                test = quick_test(constraint)
                reads.append((position, constraint.argument, keyword, default, test))
            if entry.budget is not None:
                budgeted = True
                for name, _ in entry.budget.totals:
                    position, keyword, default = self._spot(name)
                    reads.append((position, name, keyword, default, _always))
        plan = Plan(limits, scope, tuple(reads), budgeted)
        self._last = (limits, scope, plan)
        return plan


def _always(value: object) -> bool:
    return True  # a budgeted total: its value is checked by ``Limits.costs``

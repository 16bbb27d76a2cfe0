"""The grammar of limits and budgets, as ``--limit``, ``--budget`` and a policy write them.

    write:refunds amount<=100 currency in USD,EUR        # a limit: a scope, then constraints
    write:refunds amount=500 calls=20                    # a budget: a scope, then totals and calls

A limit is a scope (wildcards allowed) and one or more constraints::

    NAME<=N  NAME<N  NAME>=N  NAME>N     numeric bounds (N: -12.5, 100; at most 6 decimals)
    NAME=V                               equality: a number, true/false, else text
    NAME in V,V,...                      one of the values
    NAME under /ABS/PATH                 a path under a root (.. and symlinks resolved)
    NAME host in HOST,HOST,...           a http(s) URL whose host is in the list
    len(NAME)<=N                         a maximum length (text, bytes, a list)

A budget is a scope and ``NAME=N`` (the total of that argument over the
token's lifetime) and/or ``calls=N``. NAME is a Python parameter name. Values
hold no spaces, no ``<``, ``>`` or ``=`` (and no commas, in a list). Lines for
the same scope merge into one entry; a scope has at most one budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from ..errors import InvalidLimitError
from .constraints import Value
from .limit_entry import Budget, Limit, bad_limit, checked_number, make_budget, make_constraint

__all__ = ["parse_budget", "parse_limit", "parse_lines"]

_TOKENS = re.compile(r"len\([^)\s]*\)|<=|>=|<|>|=|[^\s<>=]+").findall
_OPERATORS = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt"}
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?").fullmatch
_WHOLE = re.compile(r"[0-9]{1,13}").fullmatch  # ASCII digits only: "²".isdigit() is True
_LENGTH = re.compile(r"len\(([^)]*)\)").fullmatch
_GRAMMAR = (
    "NAME<=N, NAME<N, NAME>=N, NAME>N, NAME=V, NAME in V,V, NAME under PATH, "
    "NAME host in H,H, len(NAME)<=N"
)


def _split(text: object, what: str, wanted: str) -> tuple[str, list[str]]:
    if not isinstance(text, str) or not text.strip():
        raise bad_limit(f"{what}: expected a scope and at least one more word, found nothing")
    if len(text) > 4096:
        raise bad_limit(f"{what}: expected at most 4096 characters, found {len(text)}")
    scope, _, rest = text.strip().partition(" ")
    tokens = _TOKENS(rest)
    if not tokens:
        raise bad_limit(f"{what} {scope!r}: expected {wanted} after the scope, found none")
    return scope, tokens


def _value(text: str) -> Value:
    if text in ("true", "false"):
        return text == "true"
    if _NUMBER(text):
        return Decimal(text)
    return text


def _list(text: str, what: str) -> list[Value]:
    items = text.split(",")
    if any(not item for item in items):
        raise bad_limit(f"{what}: expected values separated by single commas, found {text!r}")
    return [_value(item) for item in items]


def parse_limit(text: object) -> Limit:
    """One limit line: a scope, then constraints.

    :raises InvalidLimitError: the first word that does not fit the grammar, in one line.
    """
    scope, tokens = _split(text, "limit", "constraints")
    what = f"limit {str(text).strip()[:80]!r}"
    constraints = []
    index = 0

    def take() -> str:
        nonlocal index
        if index >= len(tokens):
            raise bad_limit(f"{what}: ends too early; expected {_GRAMMAR}")
        index += 1
        return tokens[index - 1]

    while index < len(tokens):
        name = take()
        length = _LENGTH(name)
        word = take()
        try:
            if length is not None:
                if word != "<=":
                    raise bad_limit(f"{what}: expected len(NAME)<=N, found {name}{word}")
                count = take()
                if _WHOLE(count) is None:
                    raise bad_limit(f"{what}: expected a whole number after <=, found {count!r}")
                constraints.append(make_constraint(length.group(1), "max_len", int(count)))
            elif word in _OPERATORS:
                constraints.append(make_constraint(name, _OPERATORS[word], _number(take(), what)))
            elif word == "=":
                constraints.append(make_constraint(name, "eq", _value(take())))
            elif word == "in":
                constraints.append(make_constraint(name, "in", _list(take(), what)))
            elif word == "under":
                constraints.append(make_constraint(name, "under", take()))
            elif word == "host" and take() == "in":
                constraints.append(make_constraint(name, "host_in", _list(take(), what)))
            else:
                raise bad_limit(f"{what}: expected {_GRAMMAR}; found {name} {word}")
        except InvalidLimitError as exc:
            if exc.message.startswith(what):
                raise
            raise bad_limit(f"{what}: {exc.message}", exc.found) from None
    return Limit(scope, tuple(constraints))


def _number(text: str, what: str) -> Decimal:
    if not _NUMBER(text):
        raise bad_limit(f"{what}: expected a number like 100 or 12.50, found {text!r}", text)
    return checked_number(Decimal(text), what)


def parse_budget(text: object) -> tuple[str, Budget]:
    """One budget line: a scope, then ``NAME=N`` totals and/or ``calls=N``.

    :raises InvalidLimitError: a word that does not fit, in one line.
    """
    scope, tokens = _split(text, "budget", "NAME=N totals or calls=N")
    what = f"budget {str(text).strip()[:80]!r}"
    if len(tokens) % 3 or any(tokens[i + 1] != "=" for i in range(0, len(tokens), 3)):
        raise bad_limit(f"{what}: expected NAME=N totals and calls=N after the scope")
    calls: int | None = None
    totals: dict[str, object] = {}
    for i in range(0, len(tokens), 3):
        name, number = tokens[i], tokens[i + 2]
        if name == "calls":
            if _WHOLE(number) is None or calls is not None:
                raise bad_limit(f"{what}: expected calls=N once, N whole; found {number!r}")
            calls = int(number)
        elif name in totals:
            raise bad_limit(f"{what}: {name} is given twice")
        else:
            totals[name] = _number(number, what)
    try:
        return scope, make_budget(calls, totals)
    except InvalidLimitError as exc:
        raise bad_limit(f"{what}: {exc.message}", exc.found) from None


def parse_lines(limits: Iterable[str], budgets: Iterable[str]) -> list[Limit]:
    """Limit and budget lines as entries, one per scope, in the order scopes first appear.

    :raises InvalidLimitError: a line outside the grammar, or two budgets for one scope.
    """
    if isinstance(limits, str) or isinstance(budgets, str):
        raise bad_limit("expected a list of limit lines, found one string")
    order: list[str] = []
    constraints: dict[str, list] = {}  # type: ignore[type-arg]
    budget_of: dict[str, Budget] = {}
    for line in limits:
        limit = parse_limit(line)
        if limit.scope not in constraints:
            order.append(limit.scope)
            constraints[limit.scope] = []
        constraints[limit.scope].extend(limit.constraints)
    for line in budgets:
        scope, budget = parse_budget(line)
        if scope in budget_of:
            raise bad_limit(f"budget: two budgets for {scope}; give one line with every total")
        budget_of[scope] = budget
        if scope not in constraints:
            order.append(scope)
            constraints[scope] = []
    return [Limit(s, tuple(constraints[s]), budget_of.get(s)) for s in order]

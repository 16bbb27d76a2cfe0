"""Property tests of the limit grammar and claim: every limit survives text and JSON, and a
numeric bound decides as plain arithmetic does."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agentsudo_tokens import LimitExceededError, Limits
from agentsudo_tokens.tokens.constraints import KINDS
from agentsudo_tokens.tokens.limit_entry import Limit, make_budget, make_constraint
from agentsudo_tokens.tokens.limits_text import parse_budget, parse_limit

names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: name not in ("in", "under", "host", "calls")
)
numbers = st.decimals(
    min_value=Decimal(-(10**9)), max_value=Decimal(10**9), places=3, allow_nan=False
)
words = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,8}", fullmatch=True).filter(
    lambda word: word not in ("true", "false")
)
items = st.one_of(numbers, words, st.booleans())
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
roots = st.from_regex(r"(/[a-z0-9_]{1,6}){1,3}", fullmatch=True)
scopes = st.from_regex(r"[a-z]{1,6}:([a-z]{1,6}|\*)", fullmatch=True)


@st.composite
def constraints(draw: st.DrawFn) -> object:
    name = draw(names)
    kind = draw(st.sampled_from(sorted(KINDS)))
    if kind in ("le", "lt", "ge", "gt"):
        return make_constraint(name, kind, draw(numbers))
    if kind == "eq":
        return make_constraint(name, kind, draw(items))
    if kind == "in":
        return make_constraint(name, kind, draw(st.lists(items, min_size=1, max_size=4)))
    if kind == "under":
        return make_constraint(name, kind, draw(roots))
    if kind == "host_in":
        return make_constraint(name, kind, draw(st.lists(hosts, min_size=1, max_size=3)))
    return make_constraint(name, kind, draw(st.integers(0, 10**6)))


@settings(max_examples=300, deadline=None)
@given(scopes, st.lists(constraints(), min_size=1, max_size=5))
def test_a_limit_survives_its_text_and_its_claim(scope: str, found: list[object]) -> None:
    limit = Limit(scope, tuple(found))  # type: ignore[arg-type]
    assert parse_limit(limit.text()) == limit
    claim = json.loads(json.dumps(Limits([limit]).claim()))
    assert Limits.from_claim(claim).entries == (limit,)


@settings(max_examples=200, deadline=None)
@given(
    scopes,
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.dictionaries(names, st.decimals(0, 10**9, places=6, allow_nan=False), max_size=3),
)
def test_a_budget_survives_its_text_and_its_claim(
    scope: str, calls: int | None, totals: dict[str, Decimal]
) -> None:
    if calls is None and not totals:
        return
    budget = make_budget(calls, totals)
    assert parse_budget(f"{scope} {budget.text()}") == (scope, budget)
    limits = Limits([Limit(scope, (), budget)])
    assert Limits.from_claim(json.loads(json.dumps(limits.claim()))) == limits


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["<=", "<", ">=", ">"]),
    numbers,
    st.one_of(st.integers(-(10**10), 10**10), numbers, st.floats(-1e10, 1e10)),
)
def test_a_numeric_bound_decides_as_arithmetic_does(op: str, bound: Decimal, value: object) -> None:
    limits = Limits.parse([f"x:y n{op}{bound}"])
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)  # type: ignore[arg-type]
    expected = {
        "<=": number <= bound,
        "<": number < bound,
        ">=": number >= bound,
        ">": number > bound,
    }[op]
    try:
        limits.check("x:y", {"n": value})
        allowed = True
    except LimitExceededError:
        allowed = False
    assert allowed is expected

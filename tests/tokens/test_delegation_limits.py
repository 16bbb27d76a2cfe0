"""Narrowing limits at delegation (issue 11 part 4): ``narrow(..., limits=)``, ``limits_narrow``.

The child carries every parent entry that could apply to its scopes (without
budgets), then those asked; a looser asked constraint is refused with
``reason="limits"``; each parent budget that applies needs a child budget that
covers it (``reason="budget"`` otherwise), whose amounts become carves. The
property test: whatever is asked, a child that is granted never allows an
argument value its parent refuses.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentsudo_tokens import Issuer, Verifier
from agentsudo_tokens.errors import DelegationRefusedError, InvalidLimitError, LimitExceededError
from agentsudo_tokens.tokens.claims import VerifiedClaims
from agentsudo_tokens.tokens.delegation import narrow
from agentsudo_tokens.tokens.limit_entry import UNIT
from agentsudo_tokens.tokens.limits import Limits
from agentsudo_tokens.tokens.limits_narrow import looser, narrow_limits
from agentsudo_tokens.tokens.limits_text import parse_limit
from agentsudo_tokens.tokens.scopes import ScopeSet

PARENT_LIMITS = Limits.parse(
    ["write:refunds amount<=100 currency in USD,EUR", "read:* len(query)<=50"],
    budgets=["write:refunds amount=500 calls=20"],
)


@pytest.fixture
def parent(issuer: Issuer, verifier: Verifier) -> VerifiedClaims:
    minted = issuer.issue(
        "Orchestrator", ["read:*", "write:refunds"], ttl=600, limits=PARENT_LIMITS
    )
    return verifier.verify(minted.token)


def _narrow(parent: VerifiedClaims, scopes: list[str], limits: Limits | None = None) -> Any:
    return narrow(
        parent, actor="Helper", scopes=ScopeSet(scopes), audience=None, ttl=None,
        now=int(time.time()), default_ttl=300, max_depth=2, delegable=ScopeSet(["**"]),
        limits=limits,
    )  # fmt: skip


def test_the_child_copies_the_entries_that_may_apply(parent: VerifiedClaims) -> None:
    child = _narrow(parent, ["read:orders"])
    assert child.limits is not None
    assert [e.text() for e in child.limits] == ["read:* len(query)<=50"]
    assert child.carves == ()
    both = _narrow(parent, ["read:orders", "write:refunds"], Limits.parse(
        [], budgets=["write:refunds amount=100 calls=5"]))  # fmt: skip
    assert [e.text() for e in both.limits] == [
        "write:refunds amount<=100 currency in USD,EUR",
        "read:* len(query)<=50",
        "write:refunds",
    ]
    # the copy has no budget: the child's budget is the one asked, carved from the parent's
    assert [e.budget for e in both.limits][:2] == [None, None]
    (carve,) = both.carves
    assert carve.entry_id == "0" and carve.amounts == {"calls": 5, "sum:amount": 100 * UNIT}


def test_narrower_limits_are_added(parent: VerifiedClaims) -> None:
    asked = Limits.parse(
        ["write:refunds amount<=50 amount>=1 currency=EUR"],
        budgets=["write:refunds calls=2 amount=9"],
    )
    child = _narrow(parent, ["write:refunds"], asked)
    args = {"amount": 50, "currency": "EUR"}
    child.limits.check("write:refunds", args)
    for bad in ({"amount": 51, "currency": "EUR"}, {"amount": 5, "currency": "USD"}):
        with pytest.raises(LimitExceededError):
            child.limits.check("write:refunds", bad)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("write:refunds amount<=101", "amount<=101 is looser than the parent token's"),
        ("write:refunds amount<100.000001", "looser"),
        ("write:refunds currency in USD,GBP", "currency in USD,GBP is looser"),
        ("write:refunds currency=JPY", "looser"),
        ("write:* amount<=1000", "looser"),
        ("read:orders len(query)<=51", "len(query)<=51 is looser"),
        ("admin:x n<=1", "applies to none of the child's scopes"),
    ],
)
def test_a_looser_limit_is_refused(parent: VerifiedClaims, line: str, words: str) -> None:
    asked = Limits.parse([line], budgets=["write:refunds amount=1 calls=1"])
    with pytest.raises(DelegationRefusedError) as refused:
        _narrow(parent, ["read:orders", "write:refunds"], asked)
    assert refused.value.reason == "limits"
    assert words in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("budgets", "words"),
    [
        ([], "--budget 'write:refunds amount=N calls=N'"),
        (["write:refunds amount=10"], "--budget 'write:refunds amount=N calls=N'"),  # no calls
        (["write:refunds calls=501 amount=1"], "calls 501 exceeds the parent token's"),
        (["write:refunds amount=500.5 calls=1"], "amount 500.5 exceeds"),
    ],
)
def test_a_parent_budget_needs_a_covering_child_budget(
    parent: VerifiedClaims, budgets: list[str], words: str
) -> None:
    asked = Limits.parse([], budgets=budgets) if budgets else None
    with pytest.raises(DelegationRefusedError) as refused:
        _narrow(parent, ["write:refunds"], asked)
    assert refused.value.reason == "budget"
    assert words in str(refused.value), str(refused.value)


def test_a_budget_on_a_wider_pattern_needs_a_budget_covering_the_childs_calls(
    issuer: Issuer, verifier: Verifier
) -> None:
    held = Limits.parse([], budgets=["write:* calls=10"])
    parent = verifier.verify(issuer.issue("O", ["write:*"], ttl=600, limits=held).token)
    # the child may call write:anything: a budget on write:refunds alone leaves the rest free
    with pytest.raises(DelegationRefusedError, match="write:\\* calls=N"):
        _narrow(parent, ["write:*"], Limits.parse([], budgets=["write:refunds calls=3"]))
    child = _narrow(parent, ["write:refunds"], Limits.parse([], budgets=["write:refunds calls=3"]))
    assert child.carves[0].amounts == {"calls": 3}
    child = _narrow(parent, ["write:*"], Limits.parse([], budgets=["write:* calls=3"]))
    assert child.carves[0].amounts == {"calls": 3}


def test_too_many_entries_is_refused_as_limits(issuer: Issuer, verifier: Verifier) -> None:
    held = Limits.parse([f"read:s{i} n<=1" for i in range(30)])
    parent = verifier.verify(issuer.issue("O", ["read:*"], ttl=600, limits=held).token)
    asked = Limits.parse([f"read:t{i} n<=1" for i in range(3)])
    with pytest.raises(DelegationRefusedError) as refused:
        _narrow(parent, ["read:*"], asked)
    assert refused.value.reason == "limits"


# -- the property: never looser ------------------------------------------------------------

_KINDS = ["<=", "<", ">=", ">"]
_numbers = st.integers(min_value=-50, max_value=150)
_bound = st.tuples(st.sampled_from(_KINDS), _numbers).map(lambda b: f"amount{b[0]}{b[1]}")
_set = st.lists(st.integers(0, 120), min_size=1, max_size=4, unique=True).map(
    lambda xs: f"amount in {','.join(map(str, xs))}"
)
_constraint = st.one_of(_bound, _set, _numbers.map(lambda n: f"amount={n}"))
_lines = st.lists(_constraint, min_size=1, max_size=3).map(
    lambda cs: "write:refunds " + " ".join(cs)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(held=_lines, asked=_lines, values=st.lists(st.integers(-60, 160), max_size=30))
def test_a_granted_child_never_allows_what_its_parent_refuses(
    held: str, asked: str, values: list[int]
) -> None:
    parent = Limits([parse_limit(held)])
    try:
        carried = narrow_limits(
            parent, ScopeSet(["write:refunds"]), Limits([parse_limit(asked)]), agent="O"
        )
    except DelegationRefusedError as exc:
        assert exc.reason == "limits"
        # refused only for a reason: some asked constraint is looser than a held one
        wanted = parse_limit(asked).constraints
        assert any(looser(a, h) for a in wanted for h in parse_limit(held).constraints)
        return
    except InvalidLimitError:
        return
    assert carried.limits is not None
    for value in [*values, Decimal("99.5"), Decimal("100.5")]:
        args = {"amount": value}
        try:
            carried.limits.check("write:refunds", args)
        except LimitExceededError:
            continue
        parent.check("write:refunds", args)  # the child allows it: so does the parent
    # and no asked constraint is looser than a held one of its kind
    for a in parse_limit(asked).constraints:
        assert not any(looser(a, h) for h in parse_limit(held).constraints)

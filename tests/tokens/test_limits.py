"""Limits in the token (RFC 9396 ``authorization_details``): grammar, claim, constraint checks."""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import (
    BudgetExhaustedError,
    InvalidLimitError,
    Issuer,
    KeyDirectory,
    LimitExceededError,
    Limits,
    MalformedTokenError,
    Verifier,
)
from agentsudo_tokens.tokens.jws import encode
from agentsudo_tokens.tokens.limits_text import parse_budget, parse_limit

REFUNDS = "write:refunds amount<=100 currency in USD,EUR"


def _limits(*lines: str, budgets: tuple[str, ...] = ()) -> Limits:
    return Limits.parse(lines, budgets=budgets)


# --- the grammar ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        REFUNDS,
        "write:refunds amount<100 amount>=1 amount>-5.5",
        "write:files path under /srv/data len(name)<=20",
        "net:fetch url host in api.example.com,example.org",
        "db:query dry_run=true table=orders limit=10",
        "read:* region in eu-west-1,eu-central-1",
    ],
)
def test_a_limit_line_survives_parse_text_parse(line: str) -> None:
    limit = parse_limit(line)
    assert parse_limit(limit.text()) == limit
    again = Limits.from_claim(json.loads(json.dumps(_limits(line).claim())))
    assert again.entries == (limit,)


def test_the_grammar_accepts_spaces_around_operators() -> None:
    assert parse_limit("write:refunds amount <= 100") == parse_limit("write:refunds amount<=100")


def test_lines_for_one_scope_merge_and_a_budget_joins_them() -> None:
    limits = _limits(
        "write:refunds amount<=100",
        "write:refunds currency in USD",
        budgets=("write:refunds amount=500 calls=20",),
    )
    (entry,) = limits.entries
    assert [c.text() for c in entry.constraints] == ["amount<=100", "currency in USD"]
    assert entry.budget is not None and entry.budget.text() == "amount=500 calls=20"
    assert entry.budget.counters() == {"calls": 20, "sum:amount": 500_000_000}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("write:refunds", "expected constraints after the scope"),
        ("write:refunds amount<<100", "expected a number"),
        ("write:refunds amount<=1e9", "expected a number like 100"),
        ("write:refunds amount<=nan", "expected a number like 100"),
        ("write:refunds amount<=0.0000001", "at most 6 decimals"),
        ("write:refunds amount<=10000000000000", "from -1000000000000 to 1000000000000"),
        ("write:refunds 1x<=3", "argument name"),
        ("write:refunds amount", "ends too early"),
        ("write:refunds amount regex .*", "expected NAME<=N"),
        ("write:refunds p under rel/x", "absolute, normalized path"),
        ("write:refunds p under /a/../b", "absolute, normalized path"),
        ("write:refunds x in a,,b", "single commas"),
        ("write:refunds url host in a..b", "host names"),
        ("write:refunds url host in user@evil.com", "host names"),
        ("write:refunds len(x)<5", "len(NAME)<=N"),
        ("write:refunds len(x)<=-1", "whole number"),
        ("wr|te x=1", "limit scope"),
        ("write:refunds x=" + "y" * 300, "printable text of 1 to 256"),
    ],
)
def test_a_limit_outside_the_grammar_is_refused_in_one_line(line: str, reason: str) -> None:
    with pytest.raises(InvalidLimitError, match="^limit|^unknown|^limit scope") as caught:
        _limits(line)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("write:refunds", "totals or calls"),
        ("write:refunds amount=-5", "from 0 to"),
        ("write:refunds calls=1.5", "calls=N once"),
        ("write:refunds calls=1 calls=2", "calls=N once"),
        ("write:refunds amount=5 amount=6", "given twice"),
        ("write:refunds amount<=5", "NAME=N totals"),
        ("write:refunds calls", "NAME=N totals"),
    ],
)
def test_a_budget_outside_the_grammar_is_refused(line: str, reason: str) -> None:
    with pytest.raises(InvalidLimitError) as caught:
        parse_budget(line)
    assert reason in str(caught.value)


def test_two_budgets_for_one_scope_are_refused() -> None:
    with pytest.raises(InvalidLimitError, match="two budgets"):
        _limits(budgets=("write:refunds calls=1", "write:refunds amount=5"))


# --- checking a call --------------------------------------------------------------------------


def test_the_issue_example_names_the_limit_and_the_value() -> None:
    limits = _limits(REFUNDS)
    limits.check("write:refunds", {"order_id": "o1", "amount": 50, "currency": "USD"})
    with pytest.raises(LimitExceededError) as caught:
        limits.check("write:refunds", {"order_id": "o2", "amount": 5000, "currency": "USD"})
    assert str(caught.value) == "amount 5000 exceeds the token's limit 100 for write:refunds"
    assert caught.value.argument == "amount" and caught.value.limit == "amount<=100"
    assert isinstance(caught.value, PermissionError)


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (100, True),
        (Decimal("100.000000"), True),
        (99.99, True),
        (100.01, False),
        (-3, True),
        (True, False),  # a bool is not a number here, though Python says True == 1
        ("50", False),  # no implicit conversion
        (float("nan"), False),
        (float("inf"), False),
        (Decimal("NaN"), False),
        (None, False),
        ([50], False),
    ],
)
def test_a_numeric_bound_takes_only_real_numbers(value: Any, allowed: bool) -> None:
    limits = _limits("write:refunds amount<=100")
    if allowed:
        limits.check("write:refunds", {"amount": value})
    else:
        with pytest.raises(LimitExceededError):
            limits.check("write:refunds", {"amount": value})


def test_strict_bounds_and_minimums() -> None:
    limits = _limits("x:y n<10 n>0")
    limits.check("x:y", {"n": 9.5})
    for bad in (10, 0, -1):
        with pytest.raises(LimitExceededError):
            limits.check("x:y", {"n": bad})


def test_a_missing_constrained_argument_is_a_denial() -> None:
    with pytest.raises(LimitExceededError, match="amount is missing"):
        _limits(REFUNDS).check("write:refunds", {"currency": "USD"})


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("USD", True), ("usd", False), ("GBP", False), (1, False), (None, False)],
)
def test_one_of_is_exact(value: Any, allowed: bool) -> None:
    limits = _limits("write:refunds currency in USD,EUR")
    if allowed:
        limits.check("write:refunds", {"currency": value})
    else:
        with pytest.raises(LimitExceededError, match="is not one of the token's USD,EUR"):
            limits.check("write:refunds", {"currency": value})


def test_equality_does_not_confuse_types() -> None:
    limits = _limits("db:query dry_run=true limit=10 table=orders")
    limits.check("db:query", {"dry_run": True, "limit": 10, "table": "orders"})
    for bad in ({"dry_run": 1}, {"limit": "10"}, {"limit": True}, {"table": "Orders"}):
        with pytest.raises(LimitExceededError):
            limits.check("db:query", {"dry_run": True, "limit": 10, "table": "orders", **bad})


def test_a_path_must_resolve_under_the_root(tmp_path: Path, monkeypatch: Any) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    limits = _limits(f"write:files path under {root}")
    allowed = [root, root / "sub" / "f.txt", root / "new-file", f"{root}/sub/../f"]
    for path in allowed:
        limits.check("write:files", {"path": str(path)})
    limits.check("write:files", {"path": root / "sub"})  # a PathLike too
    refused = [
        f"{root}/../secret/x",
        f"{root}-evil/x",  # a sibling sharing the prefix
        f"{root}/link/x",  # a symlink out of the root
        "/etc/passwd",
        f"{root}/sub\x00/x",
        "",
        b"/srv/x",
        42,
    ]
    for path in refused:
        with pytest.raises(LimitExceededError, match="path"):
            limits.check("write:files", {"path": path})
    monkeypatch.chdir(root)
    limits.check("write:files", {"path": "sub/f.txt"})  # relative: as the call would open it
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LimitExceededError):
        limits.check("write:files", {"path": "secret/x"})


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.example.com/v1?q=1", True),
        ("http://API.Example.com./x", True),
        ("https://api.example.com:8443/", True),
        ("wss://api.example.com/socket", True),
        ("https://api.example.com@evil.com/", False),
        ("https://evil.com@api.example.com/", False),  # userinfo at all: refused
        ("https://api.example.com\\@evil.com/", False),
        ("https://api.example.com.evil.com/", False),
        ("https://evil.com/?u=https://api.example.com", False),
        ("https://api.example.com:99999/", False),
        ("https://api.example.com:port/", False),
        ("ftp://api.example.com/", False),
        ("file:///etc/passwd", False),
        ("//api.example.com/x", False),
        ("https://api.example.com /x", False),
        ("https://api.exаmple.com/", False),  # a Cyrillic a
        ("https://[::1]/", False),
        (b"https://api.example.com/", False),
        (None, False),
    ],
)
def test_a_url_host_must_be_in_the_list(url: Any, allowed: bool) -> None:
    limits = _limits("net:fetch url host in api.example.com,example.org")
    if allowed:
        limits.check("net:fetch", {"url": url})
    else:
        with pytest.raises(LimitExceededError, match="^url "):
            limits.check("net:fetch", {"url": url})


def test_a_maximum_length() -> None:
    limits = _limits("mail:send len(body)<=5 len(to)<=2")
    limits.check("mail:send", {"body": "hello", "to": ["a", "b"]})
    for bad in ({"body": "hello!"}, {"to": ["a", "b", "c"]}, {"body": 12345}):
        with pytest.raises(LimitExceededError):
            limits.check("mail:send", {"body": "hello", "to": ["a"], **bad})


def test_a_wildcard_limit_applies_to_every_scope_it_matches() -> None:
    limits = _limits("write:* amount<=10", "write:refunds amount<=100")
    assert [eid for eid, _ in limits.for_scope("write:refunds")] == ["0", "1"]
    assert [eid for eid, _ in limits.for_scope("read:orders")] == []
    with pytest.raises(LimitExceededError, match="limit 10"):
        limits.check("write:refunds", {"amount": 50})  # every limit that applies must hold
    limits.check("read:orders", {})  # no limit on this scope


def test_a_denial_never_names_other_grants() -> None:
    limits = _limits(REFUNDS, "admin:delete table in scratch")
    with pytest.raises(LimitExceededError) as caught:
        limits.check("write:refunds", {"amount": 5000, "currency": "USD"})
    assert "admin" not in str(caught.value) and "scratch" not in str(caught.value)


# --- budgets: what a call costs ---------------------------------------------------------------


def test_a_call_costs_one_call_and_its_amount_in_millionths() -> None:
    limits = _limits(budgets=("write:refunds amount=500 calls=20",))
    assert limits.costs("write:refunds", {"amount": 12.5}) == [
        ("0", {"calls": 1, "sum:amount": 12_500_000}, {"calls": 20, "sum:amount": 500_000_000})
    ]
    assert limits.costs("write:refunds", {"amount": 0.0000001})[0][1]["sum:amount"] == 1  # up


@pytest.mark.parametrize("amount", [-1, True, "5", float("nan"), None, 10**13])
def test_a_budgeted_argument_must_be_a_number_at_least_zero(amount: Any) -> None:
    limits = _limits(budgets=("write:refunds amount=500",))
    with pytest.raises(BudgetExhaustedError, match="amount"):
        limits.costs("write:refunds", {"amount": amount})
    with pytest.raises(BudgetExhaustedError, match="amount is missing"):
        limits.costs("write:refunds", {})


# --- in the token -----------------------------------------------------------------------------


def test_limits_go_through_issue_and_verify(issuer: Issuer, verifier: Verifier) -> None:
    limits = _limits(REFUNDS, budgets=("write:refunds amount=500 calls=20",))
    minted = issuer.issue("SupportBot", ["read:orders", "write:refunds"], limits=limits)
    claims = verifier.verify(minted.token)
    assert claims.limits == limits
    assert claims.claims["authorization_details"][0]["type"] == "agentsudo_limits"
    assert verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token).limits is None


def test_the_issuer_refuses_a_limit_on_a_scope_it_does_not_grant(issuer: Issuer) -> None:
    with pytest.raises(InvalidLimitError, match="grants no scope"):
        issuer.issue("Bot", ["read:orders"], limits=_limits("write:refunds amount<=1"))
    issuer.issue("Bot", ["write:*"], limits=_limits("write:refunds amount<=1"))
    issuer.issue("Bot", ["write:refunds"], limits=_limits("write:* amount<=1"))


def _signed(key_dir: KeyDirectory, details: object) -> str:
    key = key_dir.signing_key()
    now = int(time.time())
    claims = {
        "iss": "agentsudo",
        "sub": "Bot",
        "aud": "agentsudo",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": os.urandom(16).hex(),
        "scope": "write:refunds",
        "authorization_details": details,
    }
    return encode({"alg": key.alg, "typ": "at+jwt", "kid": key.kid}, claims, key)


def _entry(**members: Any) -> dict[str, Any]:
    return {"type": "agentsudo_limits", "scope": "write:refunds", **members}


@pytest.mark.parametrize(
    "details",
    [
        [],
        {},
        "amount<=100",
        [_entry(constraints=[{"arg": "amount", "regex": ".*"}])],  # an unknown kind
        [_entry(constraints=[{"arg": "amount", "le": 100, "ge": 0}])],  # two kinds in one
        [_entry(constraints=[{"arg": "amount", "le": True}])],
        [_entry(constraints=[{"arg": "amount", "le": "100"}])],
        [_entry(constraints=[{"arg": "amount", "le": 1e300}])],
        [_entry(constraints=[{"arg": "1x", "le": 1}])],
        [_entry(constraints=[{"arg": "p", "under": "relative"}])],
        [_entry(constraints=[{"arg": "u", "host_in": []}])],
        [_entry(constraints="amount<=1")],
        [_entry()],  # neither constraints nor budget
        [_entry(budget={})],
        [_entry(budget={"calls": -1})],
        [_entry(budget={"calls": 1, "refill": 5})],
        [_entry(budget={"totals": {"amount": -5}})],
        [_entry(constraints=[], extra=1)],
        [{"type": "payment_initiation", "scope": "write:refunds"}],  # a type we cannot enforce
        [{"scope": "write:refunds", "constraints": [{"arg": "a", "le": 1}]}],
        [_entry(constraints=[{"arg": "a", "le": 1}])] * 33,
    ],
)
def test_a_token_whose_limits_cannot_be_enforced_is_refused(
    key_dir: KeyDirectory, verifier: Verifier, details: object
) -> None:
    with pytest.raises(MalformedTokenError, match="authorization_details") as caught:
        verifier.verify(_signed(key_dir, details))
    assert "\n" not in str(caught.value)


def test_a_well_formed_hand_made_claim_is_accepted(
    key_dir: KeyDirectory, verifier: Verifier
) -> None:
    details = [_entry(constraints=[{"arg": "amount", "le": 99.5}], budget={"calls": 3})]
    claims = verifier.verify(_signed(key_dir, details))
    assert claims.limits is not None
    with pytest.raises(LimitExceededError, match="limit 99.5"):
        claims.limits.check("write:refunds", {"amount": 99.6})


# --- found in review ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["write:refunds calls=²", "write:refunds calls=٣", "write:refunds amount=5 calls=1²"],
)
def test_only_ascii_digits_count_calls(line: str) -> None:
    with pytest.raises(InvalidLimitError, match="calls=N once"):
        parse_budget(line)


@pytest.mark.parametrize("line", ["mail:send len(body)<=²", "mail:send len(body)<=٣"])
def test_only_ascii_digits_give_a_length(line: str) -> None:
    with pytest.raises(InvalidLimitError, match="whole number"):
        parse_limit(line)


def test_a_budget_the_store_could_not_keep_is_refused_when_written() -> None:
    long_name = "a" * 61
    with pytest.raises(InvalidLimitError, match="at most 60 characters"):
        parse_budget(f"write:refunds {long_name}=5")
    parse_budget(f"write:refunds {'a' * 60}=5")
    many = " ".join(f"n{i}=1" for i in range(16))
    with pytest.raises(InvalidLimitError, match="at most 15 totals"):
        parse_budget(f"write:refunds {many} calls=1")


def test_a_huge_integer_is_a_denial_not_a_crash() -> None:
    limits = _limits("write:refunds amount<=100")
    with pytest.raises(LimitExceededError, match="an integer of"):
        limits.check("write:refunds", {"amount": 10**5000})


class _LyingFloat(float):
    def __repr__(self) -> str:
        return "1.0"


class _LyingList(list):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 1


class _ShiftyPath:
    def __init__(self, first: str) -> None:
        self.calls, self.first = 0, first

    def __fspath__(self) -> str:
        self.calls += 1
        return self.first if self.calls == 1 else "/etc/passwd"


def test_subclasses_cannot_lie_about_what_they_hold(tmp_path: Path) -> None:
    with pytest.raises(LimitExceededError, match="5000"):
        _limits("write:refunds amount<=100").check("write:refunds", {"amount": _LyingFloat(5000)})
    with pytest.raises(LimitExceededError, match="no length"):
        _limits("mail:send len(to)<=2").check("mail:send", {"to": _LyingList([1, 2, 3])})
    with pytest.raises(LimitExceededError, match="not a path"):
        _limits(f"write:files path under {tmp_path}").check(
            "write:files", {"path": _ShiftyPath(str(tmp_path / "x"))}
        )


def test_a_path_starting_with_a_tilde_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "~").mkdir()
    monkeypatch.chdir(tmp_path)
    limits = _limits(f"write:files path under {tmp_path}")
    for path in ("~/.ssh/id_rsa", "~root/.bashrc", "~"):
        with pytest.raises(LimitExceededError, match="not a path"):
            limits.check("write:files", {"path": path})
    limits.check("write:files", {"path": "./~/x"})  # a directory named ~, said plainly

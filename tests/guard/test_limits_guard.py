"""``@sudo`` and ``check_scope`` check the limits a token carries on the call's arguments."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import Agent, Issuer, Verifier, sudo
from agentsudo_tokens.errors import LimitExceededError, PermissionDeniedError
from agentsudo_tokens.guard.approval_context import ApprovalContext
from agentsudo_tokens.guard.sudo import check_scope
from agentsudo_tokens.tokens.limits import Limits

REFUNDS = "write:refunds amount<=100 currency in USD,EUR len(order_id)<=64"


def agent_with(issuer: Issuer, verifier: Verifier, *limits: str, scopes: Any = None) -> Agent:
    token = issuer.issue(
        "SupportBot",
        scopes or ["read:orders", "write:refunds", "write:files"],
        limits=Limits.parse(limits),
    ).token
    return Agent.from_token(token, verifier=verifier)


@sudo(scope="write:refunds")
def process_refund(order_id: str, amount: Any, currency: str = "USD") -> str:
    return f"refunded {amount} {currency} on {order_id}"


def test_a_call_within_the_limits_runs_and_one_over_them_is_refused(
    issuer: Issuer, verifier: Verifier
) -> None:
    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert process_refund("o1", 50) == "refunded 50 USD on o1"
        assert process_refund("o1", 100, "EUR") == "refunded 100 EUR on o1"
        with pytest.raises(LimitExceededError) as caught:
            process_refund("o2", 5000)
    assert str(caught.value) == "amount 5000 exceeds the token's limit 100 for write:refunds"
    assert caught.value.argument == "amount" and caught.value.limit == "amount<=100"
    assert "read:orders" not in str(caught.value)  # never the caller's other grants


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ((("o1", 50, "GBP"), {}), "currency 'GBP' is not one of the token's USD,EUR"),
        ((("o1",), {"amount": 50, "currency": "usd"}), "currency 'usd' is not one of"),
        ((("o1", True), {}), "amount true is not a number"),
        ((("o1", "50"), {}), "amount '50' is not a number"),
        ((("o1", float("nan")), {}), "amount nan is not a number"),
        ((("o1", float("inf")), {}), "amount inf is not a number"),
        ((("o1", 10**400), {}), "exceeds the token's limit 100"),
        ((("o1", Decimal("100.0000001")), {}), "exceeds the token's limit 100"),
        ((("o1", None), {}), "amount None is not a number"),
        ((("o" * 65, 5), {}), "its length 65 exceeds the token's limit 64"),
        (((), {"order_id": "o1"}), "amount is missing; the token limits it (amount<=100)"),
    ],
)
def test_hostile_and_missing_arguments_are_refused(
    issuer: Issuer, verifier: Verifier, call: Any, message: str
) -> None:
    args, kwargs = call
    with agent_with(issuer, verifier, REFUNDS).start_session():
        with pytest.raises(LimitExceededError, match="for write:refunds") as caught:
            process_refund(*args, **kwargs)
    assert message in str(caught.value)


def test_values_the_quick_tests_leave_to_the_full_check_still_pass(
    issuer: Issuer, verifier: Verifier
) -> None:
    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert process_refund("o1", 99.5) == "refunded 99.5 USD on o1"
        assert process_refund("o1", Decimal("100")) == "refunded 100 USD on o1"
        assert process_refund(order_id="o1", amount=0, currency="EUR").startswith("refunded 0")


def test_a_default_is_checked_as_the_function_sees_it(issuer: Issuer, verifier: Verifier) -> None:
    @sudo(scope="write:refunds")
    def refund_in(order_id: str, amount: int, currency: str = "GBP") -> str:
        return currency

    with agent_with(issuer, verifier, REFUNDS).start_session():
        with pytest.raises(LimitExceededError, match="currency 'GBP'"):
            refund_in("o1", 5)
        assert refund_in("o1", 5, currency="USD") == "USD"


def test_keyword_only_positional_only_and_var_keyword_arguments(
    issuer: Issuer, verifier: Verifier
) -> None:
    @sudo(scope="write:refunds")
    def positional(order_id: str, amount: int, /, **extra: Any) -> Any:
        return amount, extra

    @sudo(scope="write:refunds")
    def keyword(order_id: str, *, amount: int, currency: str = "USD") -> int:
        return amount

    @sudo(scope="write:refunds")
    def anything(**extra: Any) -> Any:
        return extra

    with agent_with(issuer, verifier, REFUNDS).start_session():
        # a keyword `amount` lands in **extra: the parameter checked is the positional one
        assert positional("o1", 5, amount=10**6, currency="USD") == (
            5,
            {"amount": 10**6, "currency": "USD"},
        )
        with pytest.raises(LimitExceededError, match="amount 500 exceeds"):
            positional("o1", 500, currency="USD")
        assert keyword("o1", amount=7) == 7
        with pytest.raises(LimitExceededError, match="amount 101 exceeds"):
            keyword("o1", amount=101)
        assert anything(order_id="o", amount=1, currency="EUR")["amount"] == 1
        with pytest.raises(LimitExceededError, match="amount is missing"):
            anything(order_id="o", currency="EUR")


def test_methods_static_and_class_methods(issuer: Issuer, verifier: Verifier) -> None:
    class Desk:
        @sudo(scope="write:refunds")
        def refund(self, order_id: str, amount: int, currency: str = "USD") -> int:
            return amount

        @staticmethod
        @sudo(scope="write:refunds")
        def static(order_id: str, amount: int, currency: str = "USD") -> int:
            return amount

        @classmethod
        @sudo(scope="write:refunds")
        def klass(cls, order_id: str, amount: int, currency: str = "USD") -> int:
            return amount

    desk = Desk()
    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert (desk.refund("o", 5), Desk.static("o", 6), Desk.klass("o", 7)) == (5, 6, 7)
        for call in (desk.refund, Desk.static, Desk.klass):
            with pytest.raises(LimitExceededError, match="amount 101"):
                call("o", 101)


def test_async_functions_generators_and_async_generators(
    issuer: Issuer, verifier: Verifier
) -> None:
    @sudo(scope="write:refunds")
    async def refund_async(order_id: str, amount: int, currency: str = "USD") -> int:
        return amount

    @sudo(scope="write:refunds")
    def refunds(order_id: str, amount: int, currency: str = "USD") -> Iterator[int]:
        yield amount

    @sudo(scope="write:refunds")
    async def refunds_async(
        order_id: str, amount: int, currency: str = "USD"
    ) -> AsyncIterator[int]:
        yield amount

    async def drain(gen: AsyncIterator[int]) -> list[int]:
        return [item async for item in gen]

    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert asyncio.run(refund_async("o", 5)) == 5
        assert list(refunds("o", 6)) == [6]
        assert asyncio.run(drain(refunds_async("o", 7))) == [7]
        with pytest.raises(LimitExceededError):
            asyncio.run(refund_async("o", 500))
        with pytest.raises(LimitExceededError):
            list(refunds("o", 500))
        with pytest.raises(LimitExceededError):
            asyncio.run(drain(refunds_async("o", 500)))


def test_a_path_under_a_root_resolves_dots_and_symlinks(
    issuer: Issuer, verifier: Verifier, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    (root / "in").mkdir(parents=True)
    (tmp_path / "secret").write_text("no")
    os.symlink(tmp_path / "secret", root / "in" / "link")

    @sudo(scope="write:files")
    def write_file(path: str, text: str) -> str:
        return path

    with agent_with(issuer, verifier, f"write:files path under {root}").start_session():
        assert write_file(str(root / "in" / "a.txt"), "x").endswith("a.txt")
        for bad in (
            f"{root}/../secret",
            f"{root}/in/link",
            "/etc/passwd",
            f"{root}x/file",
            "",
            f"{root}/in/\x00a",
        ):
            with pytest.raises(LimitExceededError, match="path"):
                write_file(bad, "x")


def test_a_url_host_in_a_list_refuses_userinfo_and_tricks(
    issuer: Issuer, verifier: Verifier
) -> None:
    @sudo(scope="write:files")
    def fetch(url: str) -> str:
        return url

    with agent_with(issuer, verifier, "write:files url host in api.example.com").start_session():
        assert fetch("https://api.example.com/v1/x") == "https://api.example.com/v1/x"
        for bad in (
            "https://api.example.com@evil.com/",
            "https://evil.com/?api.example.com",
            "https://api.example.com.evil.com/",
            "https://evil.com\\@api.example.com/",
            "file:///etc/passwd",
            "https://api.exämple.com/",
        ):
            with pytest.raises(LimitExceededError, match="url"):
                fetch(bad)


def test_tokens_without_limits_and_other_scopes_are_untouched(
    issuer: Issuer, verifier: Verifier
) -> None:
    @sudo(scope="read:orders")
    def list_orders(amount: int) -> int:
        return amount

    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert list_orders(10**9) == 10**9  # the limit is on write:refunds only
    plain = Agent.from_token(issuer.issue("SupportBot", ["write:refunds"]).token, verifier=verifier)
    with plain.start_session():
        assert process_refund("o", 10**9, "GBP").startswith("refunded")


def test_every_entry_that_applies_must_hold(issuer: Issuer, verifier: Verifier) -> None:
    agent = agent_with(
        issuer, verifier, "write:* amount<=1000", "write:refunds amount<=100", scopes=["write:*"]
    )
    with agent.start_session():
        assert process_refund("o", 100) == "refunded 100 USD on o"  # a wildcard grant: slow path
        with pytest.raises(LimitExceededError, match="limit 100"):
            process_refund("o", 101)


def test_audit_mode_records_the_limit_and_lets_the_call_run(
    issuer: Issuer, verifier: Verifier, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agentsudo_tokens.audit.events import set_audit_log

    log = tmp_path / "audit.jsonl"
    set_audit_log(log)

    @sudo(scope="write:refunds", on_deny="log")
    def refund_logged(order_id: str, amount: int, currency: str = "USD") -> int:
        return amount

    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert refund_logged("o", 5000) == 5000
    set_audit_log(None)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    violation = [e for e in events if e["outcome"] == "audit_violation"]
    assert len(violation) == 1
    assert violation[0]["reason"] == "amount 5000 exceeds the token's limit 100 for write:refunds"
    assert violation[0]["chain"] == ["SupportBot"] and violation[0]["scope"] == "write:refunds"
    assert [e["outcome"] for e in events] == [
        "session_start",
        "audit_violation",
        "allowed",
        "session_end",
    ]


def test_a_refusal_is_recorded_as_denied_with_the_limit(
    issuer: Issuer, verifier: Verifier, tmp_path: Path
) -> None:
    from agentsudo_tokens.audit.events import set_audit_log

    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    with agent_with(issuer, verifier, REFUNDS).start_session(), pytest.raises(LimitExceededError):
        process_refund("o", 5000)
    set_audit_log(None)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    denied = [e for e in events if e["outcome"] == "denied"]
    assert [e["reason"] for e in denied] == [
        "amount 5000 exceeds the token's limit 100 for write:refunds"
    ]
    assert not [e for e in events if e["outcome"] == "allowed"]


def test_an_approver_may_approve_one_call_over_a_limit(issuer: Issuer, verifier: Verifier) -> None:
    seen: list[ApprovalContext] = []

    def up_to_a_thousand(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        seen.append(context)
        return bool(context.arguments["amount"] <= 1000)

    @sudo(scope="write:refunds", on_deny=up_to_a_thousand)
    def refund_approved(order_id: str, amount: int, currency: str = "USD") -> int:
        return amount

    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert refund_approved("o", 50) == 50
        assert seen == []  # within the limits: nobody is asked
        assert refund_approved("o", 500) == 500
        with pytest.raises(LimitExceededError, match="refused by approver: said no") as caught:
            refund_approved("o", 5000)
    assert caught.value.limit == "amount<=100"
    context = seen[0]
    assert context.reason == "amount 500 exceeds the token's limit 100 for write:refunds"
    assert (context.limit, context.argument, context.arguments["amount"]) == (
        "amount<=100",
        "amount",
        500,
    )


def test_an_async_approver_on_an_async_function(issuer: Issuer, verifier: Verifier) -> None:
    async def never(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        return False

    @sudo(scope="write:refunds", on_deny=never)
    async def refund_async(order_id: str, amount: int, currency: str = "USD") -> int:
        return amount

    with agent_with(issuer, verifier, REFUNDS).start_session():
        assert asyncio.run(refund_async("o", 5)) == 5
        with pytest.raises(LimitExceededError, match="refused by approver"):
            asyncio.run(refund_async("o", 500))


def test_check_scope_checks_the_arguments_it_is_given(issuer: Issuer, verifier: Verifier) -> None:
    with agent_with(issuer, verifier, REFUNDS).start_session():
        check_scope(
            "write:refunds",
            what="refund",
            arguments={"order_id": "o", "amount": 5, "currency": "USD"},
        )
        with pytest.raises(LimitExceededError, match="amount 500 exceeds"):
            check_scope(
                "write:refunds",
                what="refund",
                arguments={"order_id": "o", "amount": 500, "currency": "USD"},
            )
        with pytest.raises(LimitExceededError, match="is missing"):
            check_scope("write:refunds", what="refund")
        check_scope("read:orders", what="list")  # no limit on it


def test_a_limit_denial_is_a_permission_denied_error(issuer: Issuer, verifier: Verifier) -> None:
    with agent_with(issuer, verifier, REFUNDS).start_session():
        with pytest.raises(PermissionDeniedError):
            process_refund("o", 101)


def test_logging_an_allowed_limited_call(
    issuer: Issuer, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="agentsudo"):
        with agent_with(issuer, verifier, REFUNDS).start_session():
            process_refund("o", 1)
    outcomes = [r.agentsudo["outcome"] for r in caplog.records if hasattr(r, "agentsudo")]
    assert outcomes.count("allowed") == 1


@pytest.mark.parametrize("scopes", [["write:*"], ["write:refunds"]])
def test_a_call_refused_by_a_limit_is_never_recorded_as_allowed(
    issuer: Issuer, verifier: Verifier, caplog: pytest.LogCaptureFixture, scopes: list[str]
) -> None:
    """The slow path (a wildcard grant) and the fast path alike: 'allowed' only once the
    limits pass, so audit suggest and report never count a refused call as used."""
    from agentsudo_tokens import check_scope

    with caplog.at_level(logging.INFO, logger="agentsudo"):
        with agent_with(issuer, verifier, REFUNDS, scopes=scopes).start_session():
            for _ in range(2):
                with pytest.raises(PermissionDeniedError):
                    process_refund("o", 5000)
            with pytest.raises(PermissionDeniedError):
                check_scope("write:refunds", what="refund", arguments={"amount": 5000})
            process_refund("o", 1)
            check_scope(
                "write:refunds",
                what="refund",
                arguments={"amount": 1, "currency": "USD", "order_id": "o"},
            )
    outcomes = [r.agentsudo["outcome"] for r in caplog.records if hasattr(r, "agentsudo")]
    assert outcomes == ["denied", "denied", "denied", "allowed", "allowed"]

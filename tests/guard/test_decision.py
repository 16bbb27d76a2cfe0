"""on_deny: audit mode and human approval, including the original library's fail-open cases."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from agentsudo_tokens import Agent, Issuer, PermissionDeniedError, Verifier, current_agent, sudo
from agentsudo_tokens.audit import events as audit_module
from agentsudo_tokens.guard.decision import ApprovalContext

SUPPORT = Agent("SupportBot", ["read:orders", "read:secret-payroll"])


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.agentsudo for r in caplog.records if hasattr(r, "agentsudo")]  # type: ignore[attr-defined]


# --- audit mode -------------------------------------------------------------------------------


def test_audit_mode_lets_the_call_proceed_and_records_a_violation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")

    @sudo(scope="write:database", on_deny="log")
    def update_record(record_id: int) -> str:
        return f"updated {record_id}"

    with SUPPORT.start_session():
        assert update_record(7) == "updated 7"
    assert update_record(8) == "updated 8"  # no session at all: still allowed, still recorded
    violations = [e for e in _events(caplog) if e["outcome"] == "audit_violation"]
    assert [(e["agent"], e["reason"]) for e in violations] == [
        ("SupportBot", "not granted"),
        (None, "no session"),
    ]
    assert all(e["scope"] == "write:database" for e in violations)


def test_audit_mode_builds_no_event_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = audit_module._event

    def counting(*args: object, **kwargs: object) -> object:
        built.append("event")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_module, "_event", counting)
    monkeypatch.setattr(logging.root, "handlers", [])  # an app that configured no logging

    @sudo(scope="write:database", on_deny="log")
    def update_record() -> str:
        return "updated"

    @sudo(scope="read:orders")
    def read_orders() -> str:
        return "orders"

    with SUPPORT.start_session():
        for _ in range(100):
            assert update_record() == "updated"
            assert read_orders() == "orders"
    assert built == []  # the original built a JSON line on every call, logging or not


def test_audit_mode_allowed_calls_are_plain_allowed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")

    @sudo(scope="read:orders", on_deny="log")
    def read_orders() -> str:
        return "orders"

    with SUPPORT.start_session():
        read_orders()
    assert [e["outcome"] for e in _events(caplog) if e["scope"]] == ["allowed"]


# --- approvers --------------------------------------------------------------------------------


def small_refunds_only(agent: Agent, scope: str, context: ApprovalContext) -> bool:
    return context.arguments["amount"] < 100  # type: ignore[no-any-return]


@sudo(scope="write:refunds", on_deny=small_refunds_only)
def process_refund(order_id: str, amount: int, currency: str = "USD") -> str:
    return f"refunded {amount} {currency} on {order_id}"


def test_an_approver_sees_arguments_bound_to_parameter_names() -> None:
    seen: list[ApprovalContext] = []

    def approver(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        seen.append(context)
        return True

    @sudo(scope="write:refunds", on_deny=approver)
    def refund(order_id: str, amount: int, currency: str = "USD") -> str:
        return "ok"

    with SUPPORT.start_session():
        refund("o1", amount=50)
    (context,) = seen
    assert context.function.endswith("refund")
    assert dict(context.arguments) == {"order_id": "o1", "amount": 50, "currency": "USD"}
    assert context["function"] == context.function  # readable as a mapping, like the original
    assert context["args"] == ("o1",) and dict(context["kwargs"]) == {"amount": 50}


def test_small_refunds_are_approved_and_large_ones_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")
    with SUPPORT.start_session():
        assert process_refund("o1", 50) == "refunded 50 USD on o1"
        with pytest.raises(PermissionDeniedError, match="refused by approver") as refused:
            process_refund("o2", 5000)
    assert "read:secret-payroll" not in str(refused.value)
    outcomes = [e["outcome"] for e in _events(caplog) if e["scope"] == "write:refunds"]
    assert outcomes == ["approved", "refused"]


@pytest.mark.parametrize(
    "answer", [False, None, 1, "yes", [True], object()], ids=lambda a: type(a).__name__
)
def test_anything_but_true_refuses(answer: object) -> None:
    @sudo(scope="write:refunds", on_deny=lambda agent, scope, context: answer)  # type: ignore[arg-type,return-value]
    def refund() -> str:
        return "refunded"

    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError):
        refund()


def test_an_approver_that_raises_refuses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")

    def broken(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        raise TimeoutError("slack is down")

    @sudo(scope="write:refunds", on_deny=broken)
    def refund() -> str:
        return "refunded"

    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError, match="TimeoutError"):
        refund()
    assert [e["outcome"] for e in _events(caplog) if e["scope"]] == ["refused"]


def test_async_approver_on_a_sync_function_is_awaited_not_taken_as_truthy() -> None:
    # The original library called the approver and tested the returned coroutine for
    # truth: every async approver "approved" everything. Regression test for that fail-open.
    asked: list[str] = []

    async def async_approver(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        await asyncio.sleep(0)
        asked.append(scope)
        return context.arguments["amount"] < 100  # type: ignore[no-any-return]

    @sudo(scope="write:refunds", on_deny=async_approver)
    def refund(amount: int) -> str:
        return f"refunded {amount}"

    with SUPPORT.start_session():
        assert refund(10) == "refunded 10"
        with pytest.raises(PermissionDeniedError):
            refund(1000)
    assert asked == ["write:refunds", "write:refunds"]


def test_async_approver_from_sync_code_inside_a_running_loop() -> None:
    async def deny(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        return False

    async def allow(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        return True

    @sudo(scope="write:refunds", on_deny=deny)
    def denied_refund() -> str:
        return "refunded"

    @sudo(scope="write:refunds", on_deny=allow)
    def allowed_refund() -> str:
        return "refunded"

    async def main() -> str:
        with SUPPORT.start_session():
            with pytest.raises(PermissionDeniedError):
                denied_refund()  # a sync guarded call made from async code
            return allowed_refund()

    assert asyncio.run(main()) == "refunded"


def test_async_guarded_function_with_async_approver() -> None:
    async def approver(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        return context.arguments["amount"] < 100  # type: ignore[no-any-return]

    @sudo(scope="write:refunds", on_deny=approver)
    async def refund(amount: int) -> str:
        return f"refunded {amount}"

    async def main() -> None:
        async with SUPPORT.start_session():
            assert await refund(5) == "refunded 5"
            with pytest.raises(PermissionDeniedError):
                await refund(500)

    asyncio.run(main())


def test_a_sync_approver_never_blocks_the_event_loop() -> None:
    threads: list[str] = []

    def slow_human(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        threads.append(threading.current_thread().name)
        acting = current_agent()
        time.sleep(0.3)  # a human thinking, or a blocking HTTP call to Slack
        return acting is not None and acting.name == "SupportBot"  # saw the caller's session

    @sudo(scope="write:refunds", on_deny=slow_human)
    async def refund() -> str:
        return "refunded"

    async def ticker(ticks: list[float]) -> None:
        for _ in range(20):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> tuple[str, list[float]]:
        ticks: list[float] = []
        async with SUPPORT.start_session():
            result, _ = await asyncio.gather(refund(), ticker(ticks))
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == "refunded"
    assert threads and threads[0] != "MainThread"
    assert len(ticks) == 20 and ticks[-1] - ticks[0] < 0.3 + 0.2  # ticked while the human thought


def test_no_session_is_refused_without_asking() -> None:
    asked: list[object] = []

    def approver(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        asked.append(agent)
        return True

    @sudo(scope="write:refunds", on_deny=approver)
    def refund() -> str:
        return "refunded"

    with pytest.raises(PermissionDeniedError, match="no active agent session"):
        refund()
    with Agent("TempBot", ["read:orders"], session_ttl=0.05).start_session():
        time.sleep(0.1)
        with pytest.raises(PermissionDeniedError, match="expired"):
            refund()
    assert asked == []


def test_approval_is_for_one_call_only() -> None:
    answers = iter([True, False])

    @sudo(scope="write:refunds", on_deny=lambda agent, scope, context: next(answers))
    def refund() -> str:
        return "refunded"

    with SUPPORT.start_session():
        assert refund() == "refunded"
        with pytest.raises(PermissionDeniedError):
            refund()


def test_approvers_work_with_token_sessions(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue("SupportBot", "read:orders").token
    with Agent.from_token(token, verifier=verifier).start_session():
        assert process_refund("o1", 20) == "refunded 20 USD on o1"
        with pytest.raises(PermissionDeniedError):
            process_refund("o1", 2000)


def test_arguments_that_do_not_fit_are_refused_before_asking() -> None:
    asked: list[object] = []

    @sudo(scope="write:refunds", on_deny=lambda a, s, c: asked.append(c) or True)  # type: ignore[func-returns-value]
    def refund(amount: int) -> str:
        return "refunded"

    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError, match="do not fit"):
        refund(1, 2, 3)  # type: ignore[call-arg]
    assert asked == []

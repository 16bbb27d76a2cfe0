"""LangChain: guarded tools check the scope on invoke and ainvoke, and refusals reach the model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, ToolException, tool

from agentsudo_tokens import (
    Agent,
    ConfigError,
    InvalidScopeError,
    Issuer,
    PermissionDeniedError,
    Verifier,
    sudo,
)
from agentsudo_tokens.integrations.langchain import (
    ToolPermissionDenied,
    guard_tool,
    report_denials,
)

ARGS = {"order_id": "order_123", "amount": 50}
HELD_ELSEWHERE = "read:secret-payroll"  # held by AnalyticsBot; must never reach the model


def _call(args: dict[str, Any] = ARGS) -> dict[str, Any]:
    return {"type": "tool_call", "id": "call_1", "name": "issue_refund", "args": args}


class Ledger:
    """Records which of the tool's own functions ran, and in which thread."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []
        self.threads: list[int] = []

    def tool(self, *, with_coroutine: bool = True) -> StructuredTool:
        def issue_refund(order_id: str, amount: int) -> str:
            """Refund part of an order."""
            self.ran.append(("func", order_id))
            self.threads.append(threading.get_ident())
            return f"refunded {amount} on {order_id}"

        async def aissue_refund(order_id: str, amount: int) -> str:
            """Refund part of an order."""
            await asyncio.sleep(0)
            self.ran.append(("coroutine", order_id))
            return f"refunded {amount} on {order_id}"

        return StructuredTool.from_function(
            func=issue_refund,
            coroutine=aissue_refund if with_coroutine else None,
            name="issue_refund",
        )


def _agents(kind: str, issuer: Issuer, verifier: Verifier) -> tuple[Agent, Agent]:
    support_scopes = ["read:orders", "write:refunds"]
    analytics_scopes = ["read:orders", HELD_ELSEWHERE]
    if kind == "in_process":
        return Agent("SupportBot", support_scopes), Agent("AnalyticsBot", analytics_scopes)
    return (
        Agent.from_token(issuer.issue("SupportBot", support_scopes).token, verifier=verifier),
        Agent.from_token(issuer.issue("AnalyticsBot", analytics_scopes).token, verifier=verifier),
    )


def _invoke(guarded: BaseTool, how: str, payload: Any) -> Any:
    if how == "invoke":
        return guarded.invoke(payload)
    return asyncio.run(guarded.ainvoke(payload))


# --- guard_tool and @sudo over a tool ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["in_process", "token"])
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("with_coroutine", [True, False], ids=["func+coroutine", "func_only"])
def test_a_guarded_tool_allows_and_refuses_on_both_paths(
    kind: str, how: str, with_coroutine: bool, issuer: Issuer, verifier: Verifier
) -> None:
    ledger = Ledger()
    guarded = guard_tool(ledger.tool(with_coroutine=with_coroutine), "write:refunds")
    support, analytics = _agents(kind, issuer, verifier)

    with support.start_session():
        assert _invoke(guarded, how, ARGS) == "refunded 50 on order_123"
    with analytics.start_session():
        refused = _invoke(guarded, how, ARGS)
    nobody = _invoke(guarded, how, ARGS)

    expected = "coroutine" if how == "ainvoke" and with_coroutine else "func"
    assert ledger.ran == [(expected, "order_123")]  # the refused calls never ran
    function = "aissue_refund" if expected == "coroutine" else "issue_refund"
    assert refused == (
        "Permission denied: agent 'AnalyticsBot' lacks scope 'write:refunds' "
        f"for Ledger.tool.<locals>.{function}"
    )
    assert HELD_ELSEWHERE not in refused and "read:orders" not in refused
    assert nobody.startswith("Permission denied: no active agent session")
    assert "'write:refunds'" in nobody


def test_ainvoke_of_a_func_only_tool_checks_the_callers_session_in_the_executor() -> None:
    ledger = Ledger()
    guarded = guard_tool(ledger.tool(with_coroutine=False), "write:refunds")

    async def as_agent(agent: Agent, order_id: str) -> str:
        async with agent.start_session():
            await asyncio.sleep(0)  # interleave the two tasks
            result: str = await guarded.ainvoke({"order_id": order_id, "amount": 1})
            return result

    async def both() -> list[str]:
        return await asyncio.gather(
            as_agent(Agent("AnalyticsBot", [HELD_ELSEWHERE]), "order_a"),
            as_agent(Agent("SupportBot", ["write:refunds"]), "order_s"),
        )

    refused, allowed = asyncio.run(both())
    assert refused.startswith("Permission denied: agent 'AnalyticsBot' lacks scope")
    assert allowed == "refunded 1 on order_s"
    assert ledger.ran == [("func", "order_s")]
    assert ledger.threads != [threading.get_ident()]  # it ran in LangChain's executor


def test_a_tool_call_gets_an_error_tool_message_naming_the_scope() -> None:
    guarded = guard_tool(Ledger().tool(), "write:refunds")
    with Agent("AnalyticsBot", ["read:orders", HELD_ELSEWHERE]).start_session():
        message = guarded.invoke(_call())
        amessage = asyncio.run(guarded.ainvoke(_call()))
    for reply in (message, amessage):
        assert isinstance(reply, ToolMessage)
        assert reply.status == "error" and reply.tool_call_id == "call_1"
        assert "'write:refunds'" in reply.content and "AnalyticsBot" in reply.content
        assert HELD_ELSEWHERE not in reply.content and "\n" not in reply.content


def test_an_expired_session_is_refused_with_a_message() -> None:
    guarded = guard_tool(Ledger().tool(), "write:refunds")
    with Agent("TempBot", ["write:refunds"], session_ttl=0.05).start_session():
        time.sleep(0.06)
        reply = guarded.invoke(ARGS)
    assert reply.startswith("Permission denied: the session of agent 'TempBot' has expired")
    assert "'write:refunds'" in reply


def test_sudo_over_tool_returns_a_guarded_tool_with_the_same_face() -> None:
    @sudo(scope="write:refunds")
    @tool
    def issue_refund(order_id: str, amount: int) -> str:
        """Refund part of an order."""
        return f"refunded {amount} on {order_id}"

    assert isinstance(issue_refund, StructuredTool)
    assert issue_refund.name == "issue_refund"
    assert issue_refund.description == "Refund part of an order."
    assert set(issue_refund.args) == {"order_id", "amount"}
    with Agent("SupportBot", ["write:refunds"]).start_session():
        assert issue_refund.invoke(ARGS) == "refunded 50 on order_123"
    assert issue_refund.invoke(ARGS).startswith("Permission denied: no active agent session")


def test_guard_tool_returns_a_copy_and_leaves_the_original_alone() -> None:
    original = Ledger().tool()
    guarded = guard_tool(original, "write:refunds")
    assert guarded is not original and guarded.name == original.name
    assert original.invoke(ARGS) == "refunded 50 on order_123"  # unguarded, as it was
    assert original.handle_tool_error is False
    assert guarded.invoke(ARGS).startswith("Permission denied")
    twice = guard_tool(guarded, "approve:refunds")  # stacking requires both scopes
    with Agent("SupportBot", ["write:refunds"]).start_session():
        assert "'approve:refunds'" in twice.invoke(ARGS)


def test_a_refusal_stays_a_permission_denied_error_if_it_ever_propagates() -> None:
    guarded = guard_tool(Ledger().tool(), "write:refunds")
    guarded.handle_tool_error = False  # someone undoes the reporting
    with Agent("AnalyticsBot", [HELD_ELSEWHERE]).start_session():
        with pytest.raises(PermissionDeniedError) as caught:
            guarded.invoke(ARGS)
    assert isinstance(caught.value, ToolPermissionDenied)
    assert caught.value.scope == "write:refunds" and caught.value.agent == "AnalyticsBot"
    assert isinstance(caught.value.__cause__, PermissionDeniedError)


def test_the_tool_function_still_receives_injected_config() -> None:
    def tagged(order_id: str, config: RunnableConfig) -> str:
        """Report the run's tags."""
        return f"{order_id} {config.get('tags')}"

    guarded = guard_tool(StructuredTool.from_function(tagged), "write:refunds")
    assert set(guarded.args) == {"order_id"}
    with Agent("SupportBot", ["write:refunds"]).start_session():
        assert guarded.invoke({"order_id": "o1"}, {"tags": ["t1"]}) == "o1 ['t1']"


def test_on_deny_policies_apply_to_tools() -> None:
    logged = guard_tool(Ledger().tool(), "write:refunds", on_deny="log")
    seen: list[dict[str, Any]] = []

    def small_refunds(agent: Agent, scope: str, context: Any) -> bool:
        seen.append(dict(context.arguments))
        return bool(context.arguments["amount"] < 100)

    approved = guard_tool(Ledger().tool(), "write:refunds", on_deny=small_refunds)
    with Agent("AnalyticsBot", ["read:orders"]).start_session():
        assert logged.invoke(ARGS) == "refunded 50 on order_123"
        assert approved.invoke(ARGS) == "refunded 50 on order_123"
        big = {"order_id": "order_9", "amount": 500}
        assert "refused by approver" in approved.invoke(big)
        assert "refused by approver" in asyncio.run(approved.ainvoke(big))
    assert seen[:2] == [ARGS, big]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (True, "card declined"),
        ("the tool failed", "the tool failed"),
        (lambda exc: f"handled: {exc}", "handled: card declined"),
    ],
    ids=["true", "str", "callable"],
)
def test_the_tools_own_error_handling_is_kept(flag: Any, expected: str) -> None:
    def issue_refund(order_id: str) -> str:
        """Refund an order."""
        raise ToolException("card declined")

    original = StructuredTool.from_function(issue_refund, handle_tool_error=flag)
    guarded = guard_tool(original, "write:refunds")
    with Agent("SupportBot", ["write:refunds"]).start_session():
        assert guarded.invoke({"order_id": "o1"}) == expected
    assert guarded.invoke({"order_id": "o1"}).startswith("Permission denied")


def test_a_tool_that_did_not_handle_its_errors_still_raises_them() -> None:
    def issue_refund(order_id: str) -> str:
        """Refund an order."""
        raise ToolException("card declined")

    guarded = guard_tool(StructuredTool.from_function(issue_refund), "write:refunds")
    with Agent("SupportBot", ["write:refunds"]).start_session():
        with pytest.raises(ToolException, match="card declined"):
            guarded.invoke({"order_id": "o1"})
    assert guarded.invoke({"order_id": "o1"}).startswith("Permission denied")


def test_misuse_fails_when_decorating() -> None:
    class Searcher(BaseTool):
        name: str = "search"
        description: str = "Search."

        def _run(self, query: str) -> str:
            return query

    with pytest.raises(ConfigError, match="BaseTool subclass"):
        sudo(scope="read:web")(Searcher())
    with pytest.raises(InvalidScopeError):
        guard_tool(Ledger().tool(), "write:*")
    with pytest.raises(ConfigError):
        guard_tool(Ledger().tool(), "write:refunds", on_deny="ignore")  # type: ignore[arg-type]


# --- @tool over @sudo --------------------------------------------------------------------------


def _tool_over_sudo(ran: list[str]) -> tuple[StructuredTool, StructuredTool]:
    @tool
    @sudo(scope="write:refunds")
    def issue_refund(order_id: str, amount: int) -> str:
        """Refund part of an order."""
        ran.append("sync")
        return f"refunded {amount} on {order_id}"

    @tool
    @sudo(scope="write:refunds")
    async def aissue_refund(order_id: str, amount: int) -> str:
        """Refund part of an order, asynchronously."""
        ran.append("async")
        return f"refunded {amount} on {order_id}"

    return issue_refund, aissue_refund  # type: ignore[return-value]


def test_tool_over_sudo_takes_schema_and_description_from_the_function() -> None:
    sync_tool, async_tool = _tool_over_sudo([])
    assert sync_tool.description == "Refund part of an order."
    assert async_tool.description == "Refund part of an order, asynchronously."
    for made in (sync_tool, async_tool):
        assert made.args == {
            "order_id": {"title": "Order Id", "type": "string"},
            "amount": {"title": "Amount", "type": "integer"},
        }
    assert sync_tool.func is not None and async_tool.coroutine is not None


def test_tool_over_sudo_is_guarded_and_raises_unless_denials_are_reported() -> None:
    ran: list[str] = []
    sync_tool, async_tool = _tool_over_sudo(ran)
    with Agent("SupportBot", ["write:refunds"]).start_session():
        assert sync_tool.invoke(ARGS) == "refunded 50 on order_123"
        assert asyncio.run(sync_tool.ainvoke(ARGS)) == "refunded 50 on order_123"
        assert asyncio.run(async_tool.ainvoke(ARGS)) == "refunded 50 on order_123"
    assert ran == ["sync", "sync", "async"]

    with Agent("AnalyticsBot", [HELD_ELSEWHERE]).start_session():
        with pytest.raises(PermissionDeniedError, match="write:refunds"):
            sync_tool.invoke(ARGS)
        with pytest.raises(PermissionDeniedError, match="write:refunds"):
            asyncio.run(async_tool.ainvoke(ARGS))
        reported: list[Callable[[], Any]] = [
            lambda: report_denials(sync_tool).invoke(_call()),
            lambda: asyncio.run(report_denials(async_tool).ainvoke(_call())),
        ]
        for reply in (run() for run in reported):
            assert isinstance(reply, ToolMessage) and reply.status == "error"
            assert "'write:refunds'" in reply.content and HELD_ELSEWHERE not in reply.content
    assert ran == ["sync", "sync", "async"]


# --- the example ---------------------------------------------------------------------------------


def test_the_langchain_example_runs() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "langchain_tool.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[SupportBot] invoke  success: refunded $50 on order_123",
        "[SupportBot] ainvoke success: refunded $50 on order_123",
        "[AnalyticsBot] invoke  error: Permission denied: agent 'AnalyticsBot' lacks scope "
        "'write:refunds' for issue_refund",
        "[AnalyticsBot] ainvoke error: Permission denied: agent 'AnalyticsBot' lacks scope "
        "'write:refunds' for issue_refund",
    ]
    assert "read:analytics" not in done.stdout

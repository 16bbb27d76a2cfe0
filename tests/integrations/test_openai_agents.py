"""OpenAI Agents SDK: function_tool over @sudo is guarded, and a refusal reaches the model clearly.

The tools are driven as the SDK's runner drives them, through ``on_invoke_tool``
with a ``ToolContext`` and the model's JSON arguments; no model, no network.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext

from agentsudo_tokens import Agent, Issuer, PermissionDeniedError, Verifier, sudo
from agentsudo_tokens.integrations.openai_agents import denial_message

ARGS = json.dumps({"order_id": "order_123", "amount": 50})
HELD_ELSEWHERE = "read:secret-payroll"  # held by AnalyticsBot; must never reach the model
SDK_DEFAULT = "An error occurred while running the tool. Please try again."
RAN: list[tuple[str, int]] = []


@sudo(scope="write:refunds")
def issue_refund(order_id: str, amount: int) -> str:
    """Refund part of an order.

    Args:
        order_id: The order to refund.
        amount: Dollars to refund.
    """
    RAN.append(("sync", threading.get_ident()))
    return f"refunded {amount} on {order_id}"


@sudo(scope="write:refunds")
async def aissue_refund(order_id: str, amount: int) -> str:
    """Refund part of an order, asynchronously."""
    await asyncio.sleep(0)
    RAN.append(("async", threading.get_ident()))
    return f"refunded {amount} on {order_id}"


TOOLS = {
    "sync": function_tool(issue_refund, failure_error_function=denial_message),
    "async": function_tool(aissue_refund, failure_error_function=denial_message),
}
DEFAULT_TOOLS = {"sync": function_tool(issue_refund), "async": function_tool(aissue_refund)}


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    RAN.clear()


def _run(tool: FunctionTool, arguments: str = ARGS) -> Any:
    """Call the tool as the runner does after the model asked for it."""
    ctx = ToolContext(
        context=None, tool_name=tool.name, tool_call_id="call_1", tool_arguments=arguments
    )
    return tool.on_invoke_tool(ctx, arguments)


def _agents(kind: str, issuer: Issuer, verifier: Verifier) -> tuple[Agent, Agent]:
    support_scopes = ["read:orders", "write:refunds"]
    analytics_scopes = ["read:orders", HELD_ELSEWHERE]
    if kind == "in_process":
        return Agent("SupportBot", support_scopes), Agent("AnalyticsBot", analytics_scopes)
    return (
        Agent.from_token(issuer.issue("SupportBot", support_scopes).token, verifier=verifier),
        Agent.from_token(issuer.issue("AnalyticsBot", analytics_scopes).token, verifier=verifier),
    )


def test_the_sdk_reads_the_guarded_functions_signature_and_docstring() -> None:
    sync_tool, async_tool = TOOLS["sync"], TOOLS["async"]
    assert (sync_tool.name, async_tool.name) == ("issue_refund", "aissue_refund")
    assert sync_tool.description == "Refund part of an order."
    assert async_tool.description == "Refund part of an order, asynchronously."
    properties = sync_tool.params_json_schema["properties"]
    assert properties["order_id"]["type"] == "string"
    assert properties["amount"] == {
        "description": "Dollars to refund.",
        "title": "Amount",
        "type": "integer",
    }
    assert sync_tool.params_json_schema["required"] == ["order_id", "amount"]


@pytest.mark.parametrize("kind", ["in_process", "token"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_allowed_and_refused(kind: str, flavour: str, issuer: Issuer, verifier: Verifier) -> None:
    tool = TOOLS[flavour]
    support, analytics = _agents(kind, issuer, verifier)

    async def scenario() -> tuple[str, str, str]:
        async with support.start_session():
            allowed = await _run(tool)
        async with analytics.start_session():
            refused = await _run(tool)
        nobody = await _run(tool)
        return allowed, refused, nobody

    allowed, refused, nobody = asyncio.run(scenario())
    assert allowed == "refunded 50 on order_123"
    assert [kind_ for kind_, _ in RAN] == [flavour]  # the refused calls never ran
    name = "issue_refund" if flavour == "sync" else "aissue_refund"
    assert refused == (
        f"Permission denied: agent 'AnalyticsBot' lacks scope 'write:refunds' for {name}"
    )
    assert HELD_ELSEWHERE not in refused and "read:orders" not in refused
    assert nobody.startswith("Permission denied: no active agent session")
    assert "'write:refunds'" in nobody


def test_a_sync_tool_runs_in_a_thread_that_sees_the_callers_session() -> None:
    async def as_agent(agent: Agent) -> str:
        async with agent.start_session():
            await asyncio.sleep(0)  # interleave the two tasks
            result: str = await _run(TOOLS["sync"])
            return result

    async def both() -> list[str]:
        return await asyncio.gather(
            as_agent(Agent("AnalyticsBot", [HELD_ELSEWHERE])),
            as_agent(Agent("SupportBot", ["write:refunds"])),
        )

    refused, allowed = asyncio.run(both())
    assert refused.startswith("Permission denied: agent 'AnalyticsBot'")
    assert allowed == "refunded 50 on order_123"
    assert len(RAN) == 1 and RAN[0][1] != threading.get_ident()  # ran in the SDK's thread


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_without_denial_message_the_sdk_hides_the_reason(flavour: str) -> None:
    async def refused() -> str:
        async with Agent("AnalyticsBot", [HELD_ELSEWHERE]).start_session():
            result: str = await _run(DEFAULT_TOOLS[flavour])
            return result

    assert asyncio.run(refused()) == SDK_DEFAULT  # guarded, but the model is not told why
    assert RAN == []


def test_denial_message_leaves_other_errors_to_the_sdk_default() -> None:
    @function_tool(failure_error_function=denial_message)
    @sudo(scope="write:refunds")
    def flaky(order_id: str) -> str:
        """Fail for a reason that is not a refusal."""
        raise ValueError("the card number 4242 is on file")

    async def scenario() -> tuple[str, str]:
        async with Agent("SupportBot", ["write:refunds"]).start_session():
            return await _run(flaky, '{"order_id": "o1"}'), await _run(flaky, "{not json")

    assert asyncio.run(scenario()) == (SDK_DEFAULT, SDK_DEFAULT)


def test_denial_message_finds_a_refusal_behind_another_error() -> None:
    cause = PermissionDeniedError(
        "agent 'AnalyticsBot' is unsigned and this process requires signed sessions",
        agent="AnalyticsBot",
        scope="write:refunds",
    )
    wrapped = RuntimeError("tool failed")
    wrapped.__cause__ = cause
    ctx = ToolContext(context=None, tool_name="t", tool_call_id="c", tool_arguments="{}")
    message = denial_message(ctx, wrapped)
    assert message == (
        "Permission denied: agent 'AnalyticsBot' is unsigned and this process requires "
        "signed sessions (requires scope 'write:refunds')"
    )

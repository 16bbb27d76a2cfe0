"""Framework hand-offs run the sub-agent on a delegated token (issue 10 part 3).

A real broker mints every child. The LangChain tool and the OpenAI Agents
hand-off are driven as their frameworks drive them (``invoke``/``ainvoke``;
``on_invoke_handoff`` then ``on_invoke_tool``), with no model and no network.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker
from installed_cli import sh

from agentsudo_tokens import Agent, KeySet, Verifier, current_agent, sudo
from agentsudo_tokens.errors import DelegationRefusedError, PermissionDeniedError
from agentsudo_tokens.guard.sub_agent import sub_agent, sub_agent_session

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
delegable = ["read:*"]
callers = ["uid:{ME}"]
"""
SEEN: list[tuple[str, tuple[str, ...]]] = []


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path, POLICY)
    monkeypatch.setenv("AGENTSUDO_BROKER", running.address)
    SEEN.clear()
    yield running
    running.stop()


def _orchestrator(broker: Broker) -> Agent:
    token = broker.client.issue("Orchestrator", scopes=["read:*", "write:refunds"])["token"]
    return Agent.from_token(str(token), verifier=Verifier(KeySet.from_dict(broker.client.jwks())))


@sudo(scope="read:orders")
def read_orders() -> str:
    agent = current_agent()
    assert agent is not None
    SEEN.append((agent.name, agent.chain))
    return f"orders read by {agent.name}"


@sudo(scope="write:refunds")
def refund(order_id: str) -> str:
    return f"refunded {order_id}"


def test_sub_agent_decorator_and_session(broker: Broker) -> None:
    @sub_agent("Summarizer", scopes=["read:orders"], ttl=60)
    def summarize() -> str:
        return read_orders()

    @sub_agent("Summarizer", scopes=["read:orders"])
    async def asummarize() -> str:
        return read_orders()

    with pytest.raises(PermissionDeniedError, match="no agent is acting"):
        summarize()
    with _orchestrator(broker).start_session():
        assert summarize() == "orders read by Summarizer"
        assert asyncio.run(asummarize()) == "orders read by Summarizer"
        with sub_agent_session("Helper", scopes=["read:*"]) as helper:
            assert helper.chain == ("Orchestrator", "Helper")
            with pytest.raises(PermissionDeniedError):
                refund("o-1")
        assert current_agent().name == "Orchestrator"  # type: ignore[union-attr]
        with pytest.raises(DelegationRefusedError):
            with sub_agent_session("Refunder", scopes=["write:refunds"]):
                pass
    assert SEEN == [("Summarizer", ("Orchestrator", "Summarizer"))] * 2


def test_a_langchain_tool_that_calls_a_sub_agent(broker: Broker) -> None:
    from langchain_core.tools import tool

    @tool
    @sub_agent("Summarizer", scopes=["read:orders"], ttl=120)
    def ask_summarizer(question: str) -> str:
        """Hand a question about orders to the summarizer sub-agent."""
        return read_orders() + f" for {question!r}"

    assert ask_summarizer.name == "ask_summarizer"
    assert "question" in ask_summarizer.args
    with _orchestrator(broker).start_session():
        assert ask_summarizer.invoke({"question": "totals"}).startswith("orders read by Summarizer")
        answer = asyncio.run(ask_summarizer.ainvoke({"question": "totals"}))
        assert answer.startswith("orders read by Summarizer")
    assert [name for name, _ in SEEN] == ["Summarizer", "Summarizer"]


def test_an_openai_agents_handoff_runs_the_sub_agent_on_a_delegated_token(
    broker: Broker,
) -> None:
    import agents
    from agents import RunContextWrapper, function_tool
    from agents.tool_context import ToolContext

    from agentsudo_tokens.integrations.openai_agents import delegated_handoff, denial_message

    tools = [
        function_tool(read_orders, failure_error_function=denial_message),
        function_tool(refund, failure_error_function=denial_message),
    ]
    summarizer = agents.Agent(name="Summarizer", tools=tools)
    handoff = delegated_handoff(summarizer, scopes=["read:orders"], ttl=300)
    assert handoff.agent_name == "Summarizer"

    async def hand_off_then_call() -> list[str]:
        target = await handoff.on_invoke_handoff(RunContextWrapper(context=None), "")
        results = []
        for tool, arguments in zip(
            target.tools, ("{}", json.dumps({"order_id": "o-1"})), strict=True
        ):
            ctx = ToolContext(
                context=None, tool_name=tool.name, tool_call_id="c1", tool_arguments=arguments
            )
            results.append(str(await tool.on_invoke_tool(ctx, arguments)))
        return results

    with _orchestrator(broker).start_session():
        read, refused = asyncio.run(hand_off_then_call())
        assert refund("o-2") == "refunded o-2"  # the orchestrator still holds it
    assert read == "orders read by Summarizer"
    assert refused.startswith("Permission denied") and "write:refunds" in refused
    assert SEEN == [("Summarizer", ("Orchestrator", "Summarizer"))]
    assert summarizer.tools == tools  # the SDK agent itself is left as it was

    with pytest.raises(PermissionDeniedError, match="no agent is acting"):
        asyncio.run(hand_off_then_call())


@sudo(scope="read:customers")
def read_customers() -> str:
    agent = current_agent()
    assert agent is not None
    return f"customers read by {agent.name} for {'/'.join(agent.chain)}"


DEEPER = POLICY.replace('delegable = ["read:*"]', 'delegable = ["read:*"]\nmax_depth = 2')


@pytest.mark.parametrize("nested", ["delegated", "plain"])
def test_a_hand_off_from_a_sub_agent_never_has_more_than_it(
    tmp_path: Path, nested: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triage -> Summarizer (read:orders) -> Helper: Helper's tools run with at most
    Summarizer's scopes, whether the second hand-off delegates again or is a plain one.
    They used to run in the orchestrator's session: read:customers was allowed."""
    import agents
    from agents import RunContextWrapper, function_tool
    from agents.tool_context import ToolContext

    from agentsudo_tokens.integrations.openai_agents import delegated_handoff, denial_message

    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path, DEEPER)
    try:
        tool = function_tool(read_customers, failure_error_function=denial_message)
        helper = agents.Agent(name="Helper", tools=[tool])
        second = delegated_handoff(helper) if nested == "delegated" else helper
        summarizer = agents.Agent(name="Summarizer", handoffs=[second])
        first = delegated_handoff(summarizer, scopes=["read:orders"], ttl=300)

        async def two_hand_offs() -> str:
            context = RunContextWrapper(context=None)
            target = await first.on_invoke_handoff(context, "")
            inner = target.handoffs[0]
            assert isinstance(inner, agents.Handoff)
            target = await inner.on_invoke_handoff(context, "")
            call = target.tools[0]
            ctx = ToolContext(
                context=None, tool_name=call.name, tool_call_id="c", tool_arguments="{}"
            )
            return str(await call.on_invoke_tool(ctx, "{}"))

        token = running.client.issue("Orchestrator", scopes=["read:*", "write:refunds"])["token"]
        verifier = Verifier(KeySet.from_dict(running.client.jwks()))
        monkeypatch.setenv("AGENTSUDO_BROKER", running.address)
        with Agent.from_token(str(token), verifier=verifier).start_session():
            answer = asyncio.run(two_hand_offs())
        assert answer.startswith("Permission denied") and "read:customers" in answer, answer
    finally:
        running.stop()

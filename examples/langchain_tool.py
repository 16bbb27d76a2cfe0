"""A LangChain refund tool guarded by @sudo: SupportBot may refund, AnalyticsBot may not.

No model and no network: the tool is called with a tool call, as an agent loop
(LangGraph's ToolNode, an AgentExecutor) would, and the ToolMessage it returns
is what the model reads next. A refusal is a message, not a crash.

    python examples/langchain_tool.py
"""

from __future__ import annotations

import asyncio

try:  # the [langchain] extra brings it; without it, one line that says how to get it
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import tool
except ImportError as missing:
    raise SystemExit(
        f"langchain_tool.py needs the {str(missing.name).partition('.')[0]} package: "
        "pip install '.[langchain]' in a checkout"
    ) from None

from agentsudo_tokens import Agent, sudo


@sudo(scope="write:refunds")
@tool
def issue_refund(order_id: str, amount: int) -> str:
    """Refund part of an order, in dollars."""
    return f"refunded ${amount} on {order_id}"


support_bot = Agent(name="SupportBot", scopes=["read:orders", "write:refunds"])
analytics_bot = Agent(name="AnalyticsBot", scopes=["read:orders", "read:analytics"])

CALL = {
    "type": "tool_call",
    "id": "call_1",
    "name": "issue_refund",
    "args": {"order_id": "order_123", "amount": 50},
}


async def main() -> None:
    """Each agent calls the tool once through invoke and once through ainvoke."""
    for bot in (support_bot, analytics_bot):
        with bot.start_session():
            replies: list[tuple[str, ToolMessage]] = [
                ("invoke", issue_refund.invoke(CALL)),
                ("ainvoke", await issue_refund.ainvoke(CALL)),
            ]
        for how, reply in replies:
            print(f"[{bot.name}] {how:<7} {reply.status}: {reply.content}")


if __name__ == "__main__":
    asyncio.run(main())

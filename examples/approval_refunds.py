"""Human approval: small refunds are approved, large ones refused.

    python examples/approval_refunds.py

The approver gets the agent, the scope and the call's arguments bound to
parameter names. It could post to Slack and wait; here it is a rule. Only a
returned ``True`` approves; ``False``, anything else or an exception refuses.
"""

from __future__ import annotations

import asyncio

from agentsudo_tokens import Agent, PermissionDeniedError, sudo
from agentsudo_tokens.decision import ApprovalContext

LIMIT = 100


async def refund_desk(agent: Agent, scope: str, context: ApprovalContext) -> bool:
    """An async approver: the refund desk okays refunds under $100."""
    amount = context.arguments["amount"]
    await asyncio.sleep(0)  # e.g. await a Slack answer
    verdict = amount < LIMIT
    print(f"  refund desk: {agent.name} wants {scope} for ${amount} -> {verdict}")
    return verdict


@sudo(scope="write:refunds", on_deny=refund_desk)
def process_refund(order_id: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded ${amount} on {order_id}"


def main() -> None:
    """A bot without write:refunds asks for two refunds."""
    bot = Agent("SupportBot", ["read:orders"])
    with bot.start_session():
        for order_id, amount in (("order_1", 40), ("order_2", 5000)):
            try:
                print(process_refund(order_id, amount))
            except PermissionDeniedError as exc:
                print(f"refused: {exc}")


if __name__ == "__main__":
    main()

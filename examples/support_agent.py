"""An agent's tools, guarded by @sudo. No session code: the token comes from AGENTSUDO_TOKEN.

    AGENTSUDO_TOKEN=$(agentsudo issue --agent SupportBot --scopes read:orders,write:refunds) \\
        python examples/support_agent.py
"""

from __future__ import annotations

from agentsudo_tokens import PermissionDeniedError, current_agent, sudo


@sudo(scope="read:orders")
def lookup_order(order_id: str) -> str:
    """Read an order."""
    return f"order {order_id}: 2 items, $50.00"


@sudo(scope="write:refunds")
def issue_refund(order_id: str, amount: int) -> str:
    """Refund part of an order."""
    return f"refunded ${amount} on {order_id}"


@sudo(scope="delete:customer")
def delete_customer(customer_id: str) -> str:
    """The call nobody's support bot should be able to make."""
    return f"deleted {customer_id}"


def main() -> int:
    """Try each tool once as the ambient agent; print what happened."""
    try:
        agent = current_agent()
        print(f"  [{agent.name if agent else 'nobody'}] running with scopes from AGENTSUDO_TOKEN")
    except PermissionDeniedError as exc:  # AGENTSUDO_TOKEN is set but refused
        print(f"  [refused token] {exc}")
    denied = 0
    for tool, args in (
        (lookup_order, ("order_123",)),
        (issue_refund, ("order_123", 50)),
        (delete_customer, ("cust_456",)),
    ):
        try:
            print(f"    allowed  {tool.__name__}: {tool(*args)}")
        except PermissionDeniedError as exc:
            denied += 1
            print(f"    DENIED   {tool.__name__}: {exc}")
    return denied


if __name__ == "__main__":
    raise SystemExit(0 if main() >= 0 else 1)

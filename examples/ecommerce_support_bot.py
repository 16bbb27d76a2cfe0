"""The seed's e-commerce support bot: refunds and emails allowed, deleting customers denied.

python examples/ecommerce_support_bot.py
"""

from __future__ import annotations

from agentsudo_tokens import Agent, PermissionDeniedError, sudo

support_bot = Agent(
    name="CustomerSupportBot",
    scopes=["read:customers", "read:orders", "write:refunds", "send:email"],
)


@sudo(scope="write:refunds")
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order (the real one would call the payment provider here)."""
    return f"Refunded ${amount_cents / 100:.2f} on {order_id}"


@sudo(scope="send:email")
def notify_customer(customer_id: str, message: str) -> str:
    """Email a customer."""
    return f"Email sent to {customer_id}: {message}"


@sudo(scope="delete:customer")  # the support bot does not have this
def delete_customer(customer_id: str) -> str:
    """Delete a customer record."""
    return f"Customer {customer_id} deleted"


def main() -> None:
    """Run the bot's three actions and show which ones went through."""
    with support_bot.start_session():
        print(issue_refund("order_123", 5000))
        print(notify_customer("cust_456", "Your refund is processed"))
        try:
            print(delete_customer("cust_456"))
        except PermissionDeniedError as exc:
            print(f"Blocked: {exc}")


if __name__ == "__main__":
    main()

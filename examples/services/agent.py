"""An agent process: its token comes from AGENTSUDO_TOKEN, and every call it makes carries it.

    AGENTSUDO_TOKEN=$(agentsudo issue --agent SupportBot --scopes read:orders,write:refunds \\
                      --aud agentsudo --aud billing) \\
    AGENTSUDO_JWKS=http://127.0.0.1:8001/.well-known/jwks.json \\
        python examples/services/agent.py http://127.0.0.1:8000

No session code: the process's ambient agent is its token. ``@sudo`` stops a
tool call here, before anything leaves the process; the billing service checks
the same token again, so code that skips the local guard is stopped there.
Exit status 0 when every outcome is the expected one.
"""

from __future__ import annotations

import base64
import json
import sys

try:
    import httpx
except ImportError:  # one line, not a traceback
    raise SystemExit(
        "agent.py needs httpx: pip install '.[services]' (from the repository root)"
    ) from None

from agentsudo_tokens import PermissionDeniedError, current_agent, sudo
from agentsudo_tokens.integrations.httpx import AgentTokenAuth
from agentsudo_tokens.propagation import ContextThreadPoolExecutor, current_token


def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, auth=AgentTokenAuth(), timeout=10)


@sudo(scope="read:orders")
def read_order(billing: httpx.Client, order_id: str) -> httpx.Response:
    return billing.get(f"/orders/{order_id}")


@sudo(scope="write:refunds")
def refund(billing: httpx.Client, order_id: str, amount: int) -> httpx.Response:
    return billing.post("/refunds", json={"order_id": order_id, "amount": amount})


@sudo(scope="delete:customers")
def delete_customer(billing: httpx.Client, customer_id: str) -> httpx.Response:
    return billing.delete(f"/customers/{customer_id}")


def _widened(token: str, extra_scope: str) -> str:
    """The token with one more scope written into its payload; the signature left as it was."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] += f" {extra_scope}"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _show(step: str, response: httpx.Response) -> int:
    detail = response.json()
    summary = detail.get("detail") if isinstance(detail, dict) and "detail" in detail else detail
    print(f"{step:<44} -> {response.status_code} {summary}")
    return response.status_code


def main(base_url: str) -> int:
    agent = current_agent()
    assert agent is not None, "set AGENTSUDO_TOKEN"
    print(f"acting as {agent.name} with {agent.scopes.claim()} (verified: {agent.signed})")
    outcomes: list[bool] = []
    with _client(base_url) as billing:
        with ContextThreadPoolExecutor(max_workers=2) as pool:  # workers act as this agent too
            orders = pool.map(lambda n: (n, read_order(billing, f"order_{n}")), [1, 2])
            outcomes += [_show(f"GET /orders/{n}", response) == 200 for n, response in orders]
        outcomes.append(_show("refund order_123 $50", refund(billing, "order_123", 50)) == 200)
        try:
            delete_customer(billing, "cust_456")
            outcomes.append(False)
        except PermissionDeniedError as denied:
            print(f"{'delete cust_456 (local @sudo)':<44} -> blocked here: {denied}")
            outcomes.append(True)
        skipped = billing.delete("/customers/cust_456")  # code that bypasses the local guard
        outcomes.append(_show("delete cust_456 (guard skipped)", skipped) == 403)
        forged = _widened(current_token(), "delete:customers")
        tampered = billing.delete(
            "/customers/cust_456", headers={"Authorization": f"Bearer {forged}"}, auth=None
        )
        outcomes.append(_show("delete cust_456 (token edited +scope)", tampered) == 401)
    print("all outcomes as expected" if all(outcomes) else "UNEXPECTED OUTCOME")
    return 0 if all(outcomes) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: agent.py BILLING_URL")
    sys.exit(main(sys.argv[1]))

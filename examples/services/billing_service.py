"""A billing service that trusts nothing but the caller's token.

    AGENTSUDO_JWKS=http://127.0.0.1:8001/.well-known/jwks.json AGENTSUDO_AUDIENCE=billing \\
        uvicorn billing_service:app --app-dir examples/services --host 127.0.0.1 --port 8000

It holds the real credential (here, a pretend payment key), so it is the hard
boundary: every request must carry a token signed by the issuer, meant for
``billing``, unexpired, with the scope the route requires. The middleware runs
each request in the caller's session, so ``@sudo`` on ``pay_out`` checks the
caller's token too.
"""

from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from agentsudo_tokens import Agent, sudo
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope

app = FastAPI(title="billing")
app.add_middleware(AgentSudoMiddleware)  # keys from AGENTSUDO_JWKS, audience AGENTSUDO_AUDIENCE


class Refund(BaseModel):
    order_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    amount: int = Field(gt=0, le=500)


@sudo(scope="write:refunds")
def pay_out(order_id: str, amount: int) -> str:
    """The only code that touches the payment key; guarded even if a route forgets to be."""
    return f"rf_{order_id}_{amount}"


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Public: no token needed."""
    return {"status": "ok"}


@app.get("/orders/{order_id}")
async def read_order(
    order_id: str, agent: Annotated[Agent, Depends(require_scope("read:orders"))]
) -> dict[str, object]:
    return {"order_id": order_id, "items": 2, "total": 50, "read_by": agent.name}


@app.post("/refunds")
def refund(
    body: Refund, agent: Annotated[Agent, Depends(require_scope("write:refunds"))]
) -> dict[str, object]:
    receipt = pay_out(body.order_id, body.amount)  # a sync handler: the session still applies
    return {
        "refunded": body.amount,
        "order_id": body.order_id,
        "receipt": receipt,
        "by": agent.name,
    }


@app.delete("/customers/{customer_id}")
async def delete_customer(
    customer_id: str, agent: Annotated[Agent, Depends(require_scope("delete:customers"))]
) -> dict[str, object]:
    return {"deleted": customer_id, "by": agent.name}

"""``on_deny="ask"`` over a limit: a human sees why (the limit and the value) and may approve
that one call; on SQLite and on a real Redis."""

from __future__ import annotations

import threading
import time

import pytest

from agentsudo_tokens import Agent, Issuer, LimitExceededError, Limits, Verifier, sudo
from agentsudo_tokens.guard.elevation import ask
from agentsudo_tokens.state import Store
from agentsudo_tokens.state.approvals import ApprovalRequest, approve, deny, pending

FAST = 0.02


def _human(store: Store, answer: str, seen: list[ApprovalRequest]) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            for request in pending(store):
                seen.append(request)
                (approve if answer == "yes" else deny)(store, request.id, by="alice")
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def agent(issuer: Issuer, verifier: Verifier) -> Agent:
    limits = Limits.parse(["write:refunds amount<=100"])
    token = issuer.issue("SupportBot", ["write:refunds"], limits=limits).token
    return Agent.from_token(token, verifier=verifier)


@pytest.mark.parametrize("answer", ["yes", "no"])
def test_a_human_answers_one_call_over_a_limit(store: Store, agent: Agent, answer: str) -> None:
    ran: list[int] = []

    @sudo(scope="write:refunds", on_deny=ask(timeout=10, store=store, poll_interval=FAST))
    def process_refund(order_id: str, amount: int) -> str:
        ran.append(amount)
        return f"refunded {amount} on {order_id}"

    seen: list[ApprovalRequest] = []
    with agent.start_session():
        assert process_refund("o-1", 50) == "refunded 50 on o-1"  # within: nobody is asked
        assert seen == [] and pending(store) == []
        human = _human(store, answer, seen)
        if answer == "yes":
            assert process_refund("o-2", 5000) == "refunded 5000 on o-2"
        else:
            with pytest.raises(LimitExceededError, match="amount 5000 exceeds"):
                process_refund("o-2", 5000)
        human.join()
    (request,) = seen
    assert request.scope == "write:refunds" and request.arguments_json.count("5000") == 1
    assert "amount 5000 exceeds the token's limit 100" in request.reason
    assert ran == ([50, 5000] if answer == "yes" else [50])

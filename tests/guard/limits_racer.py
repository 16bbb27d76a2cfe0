"""The racing process of ``test_limits_budgets.py`` (imported by pool workers, not collected).

Each worker of a spawned ``multiprocessing`` pool gets the shared barrier at start;
``race`` verifies the token, opens its ledger (the verifier's store, or
``AGENTSUDO_STORE``), waits at the barrier for the others, then calls a ``@sudo``
function with ``amount=1`` until refused, and returns how many calls ran and the
name of the error that stopped it.
"""

from __future__ import annotations

import os
from typing import Any

from agentsudo_tokens import sudo

RACERS = 8
CAP = 1000  # a ledger that never refuses ends the race here, not in a hang
_barrier: Any = None
_ran = 0


def start(barrier: Any) -> None:
    """The pool's initializer: keep the barrier every racer waits at."""
    global _barrier
    _barrier = barrier


@sudo(scope="write:refunds")
def refund(order_id: str, amount: int) -> None:
    global _ran
    _ran += 1


def race(job: tuple[str, str, str, str]) -> tuple[int, str]:
    """Call ``refund`` under ``token`` until refused: (calls that ran, the refusal's type)."""
    from agentsudo_tokens import Agent, JwksFile, Verifier
    from agentsudo_tokens.guard.budget import ledger_for, reset_default_ledger
    from agentsudo_tokens.state import open_store

    global _ran
    url, how, token, jwks = job
    os.environ.pop("AGENTSUDO_STORE", None)
    if how == "env":
        os.environ["AGENTSUDO_STORE"] = url
    reset_default_ledger()
    store = open_store(url) if how == "verifier" else None
    agent = Agent.from_token(token, verifier=Verifier(JwksFile(jwks), store=store))
    ledger_for(agent).balance("warm-up", "0")  # connected before the start
    _ran = 0
    _barrier.wait(timeout=120)
    stopped = f"no refusal after {CAP} calls"
    with agent.start_session():
        try:
            for _ in range(CAP):
                refund("o", 1)
        except Exception as exc:  # the refusal that ends the race: reported, not hidden
            stopped = type(exc).__name__
    if store is not None:
        store.close()
    return _ran, stopped

"""Under a real broker, ``@sudo`` debits a token's budget at the broker (issue 11 part 3).

An agent process runs with ``AGENTSUDO_BROKER`` and ``AGENTSUDO_TOKEN`` (a token whose
budget comes from the broker's policy) and an ``AGENTSUDO_STORE`` it could write: the
broker's ledger moves, the agent's store stays empty. ``agentsudo budget show`` with
``AGENTSUDO_BROKER`` answers from the broker.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker, init_keys
from installed_cli import sh

from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.budgets import Budgets
from agentsudo_tokens.tokens.limit_entry import UNIT
from agentsudo_tokens.tokens.verifier import decode_unverified

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
callers = ["uid:{ME}"]
limits = ["write:refunds amount<=100"]
budgets = ["write:refunds amount=100 calls=20"]
"""
AGENT = """
import asyncio, sys
from agentsudo_tokens import sudo

@sudo(scope="write:refunds")
def refund(order_id, amount):
    print("ran", amount, flush=True)

@sudo(scope="write:refunds")
async def refund_async(order_id, amount):
    print("ran async", amount, flush=True)

@sudo(scope="read:orders")
def list_orders():
    print("listed", flush=True)

for amount in sys.argv[1:]:
    call = (lambda a: asyncio.run(refund_async("o", a))) if amount.startswith("a") else (
        lambda a: refund("o", a))
    try:
        call(float(amount.lstrip("a")))
    except PermissionError as refused:
        print(type(refused).__name__, refused, flush=True)
list_orders()
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path)
    running = Broker(tmp_path, POLICY)
    yield running
    running.stop()


def _env(broker: Broker, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_BROKER"] = broker.address
    env.update(extra)
    return env


def _agent(broker: Broker, tmp_path: Path, token: str, store: str, *amounts: str) -> list[str]:
    """Run the agent process; its lines."""
    import subprocess

    (tmp_path / "agent.py").write_text(AGENT)
    done = subprocess.run(
        [sys.executable, "agent.py", *amounts],
        cwd=tmp_path,
        env=_env(broker, AGENTSUDO_TOKEN=token, AGENTSUDO_STORE=store),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.splitlines()


def test_calls_are_debited_at_the_broker_and_the_agents_store_stays_empty(
    broker: Broker, tmp_path: Path
) -> None:
    token = str(broker.client.issue("SupportBot")["token"])
    jti = str(decode_unverified(token).claims["jti"])
    mine = tmp_path / "agent-state.db"
    store = f"sqlite:///{mine}"
    lines = _agent(broker, tmp_path, token, store, "40", "a40.5", "20", "19.5", "a0", "0.01")
    refusals = [line for line in lines if line.startswith("BudgetExhaustedError ")]
    assert lines == [
        "ran 40.0",
        "ran async 40.5",
        refusals[0],
        "ran 19.5",
        "ran async 0.0",  # nothing left, but a call of 0 costs only a call
        refusals[1],
        "listed",  # no budget on read:orders
    ]
    for refused, amount in zip(refusals, ("20", "0.01"), strict=True):
        assert f"write:refunds budget: amount {amount} would pass the token's total" in refused

    (balance,) = broker.client.budgets(token).values()
    assert balance.spent == {"sum:amount": 100 * UNIT, "calls": 4}
    # the agent's own store, which it could have written, holds nothing
    if mine.exists():
        with open_store(store) as kept:
            assert kept.items("") == {} and Budgets(kept).balances(jti) == {}

    shown = sh("budget", "show", token, cwd=tmp_path, env=_env(broker))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        f"jti {jti} (store broker {broker.address}):",
        "  write:refunds (entry 0): amount 0 of 100 left, 16 of 20 calls left",
    ]
    by_jti = sh("budget", "show", jti, "--json", cwd=tmp_path, env=_env(broker))
    assert by_jti.returncode == 0, by_jti.stderr
    answer = json.loads(by_jti.stdout)
    assert answer["store"] == f"broker {broker.address}"
    assert answer["budgets"][0]["counters"]["calls"] == {"limit": "20", "spent": "4", "left": "16"}


def test_exhausted_at_the_broker_is_refused_before_the_body_runs(
    broker: Broker, tmp_path: Path
) -> None:
    token = str(broker.client.issue("SupportBot")["token"])
    broker.client.spend(token, "write:refunds", {"amount": 100})  # another process spent it all
    lines = _agent(broker, tmp_path, token, f"sqlite:///{tmp_path / 'mine.db'}", "1", "a1", "0")
    assert [line.split(" ", 1)[0] for line in lines] == [
        "BudgetExhaustedError",
        "BudgetExhaustedError",
        "ran",  # amount 0 costs nothing but a call: 2 of 20 calls
        "listed",
    ]
    assert broker.client.budgets(token)["0"].spent == {"sum:amount": 100 * UNIT, "calls": 2}

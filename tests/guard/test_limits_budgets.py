"""``@sudo`` debits a token's budgets before the call runs (issue 11 part 3), on both stores.

The ledger is the verifier's store, else ``AGENTSUDO_STORE``; each test runs on a
fresh SQLite file and on a real redis-server. Debits are final (a call that raises
is not refunded); audit mode lets a refused call run without debiting it; an
approver may approve one over-budget call; a store that cannot be reached refuses
the call before its body runs, and no approver is asked.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_store import free_port, redis_server
from limits_racer import RACERS, race, start

from agentsudo_tokens import Agent, Issuer, JwksFile, KeyDirectory, Verifier, sudo
from agentsudo_tokens.audit.events import set_audit_log
from agentsudo_tokens.errors import (
    BudgetExhaustedError,
    LimitExceededError,
    PermissionDeniedError,
)
from agentsudo_tokens.guard.approval_context import ApprovalContext
from agentsudo_tokens.guard.budget import reset_default_ledger
from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.budgets import Balance, Budgets
from agentsudo_tokens.tokens.limit_entry import UNIT
from agentsudo_tokens.tokens.limits import Limits

REFUNDS = "write:refunds amount=100 calls=3"
ROUNDS = 4  # of the race, per backend: half through the verifier's store, half AGENTSUDO_STORE


@pytest.fixture(autouse=True)
def _fresh_ledger() -> Iterator[None]:
    """No test sees the default store another test opened."""
    reset_default_ledger()
    yield
    reset_default_ledger()


@pytest.fixture
def budgets(store_url: str) -> Iterator[Budgets]:
    """The ledger the guard debits, read directly."""
    with open_store(store_url) as store:
        yield Budgets(store)


def budgeted(issuer: Issuer, key_dir: KeyDirectory, store_url: str | None, *budget: str) -> Agent:
    """A SupportBot token with ``budget`` lines, verified by a verifier keeping ``store_url``."""
    token = issuer.issue(
        "SupportBot",
        ["read:orders", "write:refunds"],
        limits=Limits.parse([], budgets=budget or [REFUNDS]),
    ).token
    store = open_store(store_url) if store_url is not None else None
    return Agent.from_token(token, verifier=Verifier(JwksFile(key_dir.jwks_path), store=store))


def spent(budgets: Budgets, agent: Agent, entry: str = "0") -> dict[str, int] | None:
    assert agent.jti is not None
    balance = budgets.balance(agent.jti, entry)
    return None if balance is None else balance.spent


ran: list[Any] = []


@sudo(scope="write:refunds")
def refund(order_id: str, amount: Any, currency: str = "USD") -> str:
    ran.append(amount)
    return f"refunded {amount} {currency} on {order_id}"


@pytest.fixture(autouse=True)
def _nothing_ran() -> None:
    ran.clear()


def test_allowed_calls_are_debited_and_the_next_one_is_refused(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    agent = budgeted(issuer, key_dir, store_url)
    with agent.start_session():
        assert refund("o1", 50) == "refunded 50 USD on o1"
        assert spent(budgets, agent) == {"sum:amount": 50 * UNIT, "calls": 1}
        assert refund("o2", 0.25) == "refunded 0.25 USD on o2"
        with pytest.raises(BudgetExhaustedError) as over:
            refund("o3", 50)  # 50.25 + 50 > 100
        assert refund("o3", 49.75).startswith("refunded")  # exactly what is left
        with pytest.raises(BudgetExhaustedError) as used:
            refund("o4", 0)  # the 4th call: 3 calls are used
    assert ran == [50, 0.25, 49.75]
    assert spent(budgets, agent) == {"sum:amount": 100 * UNIT, "calls": 3}
    assert str(over.value) == (
        "write:refunds budget: amount 50 would pass the token's total 100 (49.75 left)"
    )
    assert (over.value.argument, over.value.limit) == ("amount", "write:refunds amount=100")
    assert str(used.value) == "write:refunds budget: the token's 3 calls are used"
    assert (used.value.argument, used.value.limit) == ("calls", "write:refunds calls=3")
    for refused in (over.value, used.value):
        assert "\n" not in str(refused) and "read:orders" not in str(refused)
        assert isinstance(refused, LimitExceededError)


def test_budgets_of_other_scopes_and_entries_that_do_not_apply_cost_nothing(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    @sudo(scope="read:orders")
    def list_orders(amount: int) -> int:
        return amount

    agent = budgeted(issuer, key_dir, store_url, "write:refunds calls=1", "read:orders calls=2")
    with agent.start_session():
        assert refund("o", 10**9) and list_orders(1) == 1 and list_orders(2) == 2
        with pytest.raises(BudgetExhaustedError, match="read:orders budget: the token's 2 calls"):
            list_orders(3)
        with pytest.raises(BudgetExhaustedError, match="write:refunds budget: the token's 1 "):
            refund("o", 1)
    assert spent(budgets, agent, "0") == {"calls": 1}
    assert spent(budgets, agent, "1") == {"calls": 2}


def test_a_call_that_raises_is_still_debited(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    @sudo(scope="write:refunds")
    def failing_refund(order_id: str, amount: int) -> None:
        ran.append(amount)
        raise RuntimeError("the payment service fell over after paying")

    agent = budgeted(issuer, key_dir, store_url)
    with agent.start_session():
        for amount in (40, 40):
            with pytest.raises(RuntimeError, match="fell over"):
                failing_refund("o", amount)
        assert spent(budgets, agent) == {"sum:amount": 80 * UNIT, "calls": 2}  # no refund
        with pytest.raises(BudgetExhaustedError, match="amount 40 would pass .* 100 .20 left"):
            failing_refund("o", 40)
    assert ran == [40, 40]


def test_a_missing_or_bad_budgeted_argument_is_refused_and_costs_nothing(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    @sudo(scope="write:refunds")
    def loose(**arguments: Any) -> None:
        ran.append(arguments)

    agent = budgeted(issuer, key_dir, store_url)
    with agent.start_session():
        for bad in ({}, {"amount": -1}, {"amount": "5"}, {"amount": True}, {"amount": None}):
            with pytest.raises(BudgetExhaustedError, match="amount"):
                loose(**bad)
        for bad_number in (float("nan"), float("inf")):
            with pytest.raises(BudgetExhaustedError, match="amount"):
                loose(amount=bad_number)
    assert ran == []
    assert spent(budgets, agent) is None


def test_audit_mode_lets_a_refused_call_run_without_debiting_it(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets, tmp_path: Path
) -> None:
    @sudo(scope="write:refunds", on_deny="log")
    def refund_logged(order_id: str, amount: int) -> int:
        ran.append(amount)
        return amount

    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    agent = budgeted(issuer, key_dir, store_url)
    with agent.start_session():
        assert refund_logged("o", 90) == 90
        assert refund_logged("o", 20) == 20  # over: it runs, and nothing is debited
        assert spent(budgets, agent) == {"sum:amount": 90 * UNIT, "calls": 1}
        assert refund_logged("o", 10) == 10  # what is left still goes through
    set_audit_log(None)
    assert ran == [90, 20, 10]
    assert spent(budgets, agent) == {"sum:amount": 100 * UNIT, "calls": 2}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["outcome"] for e in events] == [
        "session_start",
        "allowed",
        "audit_violation",
        "allowed",
        "allowed",
        "session_end",
    ]
    (violation,) = (e for e in events if e["outcome"] == "audit_violation")
    assert violation["reason"] == (
        "write:refunds budget: amount 20 would pass the token's total 100 (10 left)"
    )
    assert violation["scope"] == "write:refunds" and violation["chain"] == ["SupportBot"]


def test_an_approver_approves_one_over_budget_call(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    seen: list[ApprovalContext] = []

    def small_ones(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        seen.append(context)
        return bool(context.arguments["amount"] <= 5)

    @sudo(scope="write:refunds", on_deny=small_ones)
    def refund_approved(order_id: str, amount: int) -> int:
        ran.append(amount)
        return amount

    agent = budgeted(issuer, key_dir, store_url)
    with agent.start_session():
        assert refund_approved("o", 98) == 98
        assert seen == []  # within budget: nobody is asked
        assert refund_approved("o", 5) == 5  # over budget, approved: runs, not debited
        with pytest.raises(BudgetExhaustedError, match="refused by approver") as refused:
            refund_approved("o", 6)
    assert ran == [98, 5]
    assert spent(budgets, agent) == {"sum:amount": 98 * UNIT, "calls": 1}
    assert refused.value.limit == "write:refunds amount=100"
    assert [(c.reason, c.limit, c.argument) for c in seen] == [
        (
            f"write:refunds budget: amount {n} would pass the token's total 100 (2 left)",
            "write:refunds amount=100",
            "amount",
        )
        for n in (5, 6)
    ]


def test_async_functions_are_debited_and_refused_alike(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    async def only_tiny(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        return bool(context.arguments["amount"] < 1)

    @sudo(scope="write:refunds")
    async def refund_async(order_id: str, amount: float) -> float:
        ran.append(amount)
        return amount

    @sudo(scope="write:refunds", on_deny=only_tiny)
    async def refund_async_approved(order_id: str, amount: float) -> float:
        ran.append(amount)
        return amount

    async def calls() -> None:
        assert await refund_async("o", 60) == 60
        assert await refund_async("o", 30) == 30
        with pytest.raises(BudgetExhaustedError, match="amount 20 would pass"):
            await refund_async("o", 20)
        with pytest.raises(BudgetExhaustedError, match="refused by approver"):
            await refund_async_approved("o", 20)
        assert await refund_async_approved("o", 0.5) == 0.5  # debited: within what is left
        assert await refund_async_approved("o", 0.5) == 0.5  # 4th call: approved, not debited

    agent = budgeted(issuer, key_dir, store_url)
    with agent.start_session():
        asyncio.run(calls())
    assert ran == [60, 30, 0.5, 0.5]
    assert spent(budgets, agent) == {"sum:amount": 90 * UNIT + UNIT // 2, "calls": 3}


def test_a_wildcard_grant_and_check_scope_debit_too(
    issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    from agentsudo_tokens.guard.sudo import check_scope

    token = issuer.issue(
        "SupportBot", ["write:*"], limits=Limits.parse([], budgets=["write:* calls=2"])
    ).token
    agent = Agent.from_token(
        token, verifier=Verifier(JwksFile(key_dir.jwks_path), store=open_store(store_url))
    )
    with agent.start_session():
        refund("o", 1)  # the slow path: a wildcard grant
        check_scope("write:refunds", what="refund", arguments={"amount": 1})
        with pytest.raises(BudgetExhaustedError, match=r"write:\* budget: the token's 2 calls"):
            refund("o", 1)
    assert spent(budgets, agent) == {"calls": 2}


def test_the_ledger_is_agentsudo_store_when_the_verifier_has_none(
    issuer: Issuer,
    key_dir: KeyDirectory,
    store_url: str,
    budgets: Budgets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTSUDO_STORE", store_url)
    agent = budgeted(issuer, key_dir, None)
    with agent.start_session():
        refund("o", 100)
        with pytest.raises(BudgetExhaustedError, match="0 left"):
            refund("o", 0.000001)
    assert spent(budgets, agent) == {"sum:amount": 100 * UNIT, "calls": 1}


# -- the store cannot be reached ---------------------------------------------------------


def _unreachable(tmp_path: Path) -> list[tuple[str, str]]:
    """Store URLs that cannot be reached, and what the refusal names."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    (tmp_path / "not-a-db").write_text("plain text, not SQLite\n" * 100)
    return [
        (closed, closed),
        (f"redis://user:hunter2@127.0.0.1:{free_port()}/0", "redis://user:***@127.0.0.1:"),
        (f"sqlite:///{tmp_path}/missing/dir/state.db", f"{tmp_path}/missing/dir/state.db"),
        (f"sqlite:///{tmp_path}/not-a-db", f"{tmp_path}/not-a-db"),
    ]


def test_the_store_unreachable_refuses_the_call_before_it_runs(
    issuer: Issuer, key_dir: KeyDirectory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[ApprovalContext] = []

    def yes(agent: Agent, scope: str, context: ApprovalContext) -> bool:
        asked.append(context)
        return True

    @sudo(scope="write:refunds", on_deny=yes)
    def refund_approved(order_id: str, amount: int) -> None:
        ran.append(amount)

    @sudo(scope="write:refunds", on_deny=yes)
    async def refund_async(order_id: str, amount: int) -> None:
        ran.append(amount)

    agent = budgeted(issuer, key_dir, None)
    for url, named in _unreachable(tmp_path):
        monkeypatch.setenv("AGENTSUDO_STORE", url)
        reset_default_ledger()
        with agent.start_session():
            for call in (
                lambda: refund("o", 1),
                lambda: refund_approved("o", 1),
                lambda: asyncio.run(refund_async("o", 1)),
            ):
                with pytest.raises(PermissionDeniedError) as refused:
                    call()
                message = str(refused.value)
                assert not isinstance(refused.value, LimitExceededError)
                assert message.startswith("write:refunds budget: cannot debit it: ")
                assert named in message and "\n" not in message, message
                assert "hunter2" not in message
    assert ran == [] and asked == []
    assert not (tmp_path / "missing").exists()


def test_the_verifiers_store_going_down_refuses_the_next_call(
    issuer: Issuer, key_dir: KeyDirectory, tmp_path: Path
) -> None:
    with redis_server(tmp_path) as (url, server):
        agent = budgeted(issuer, key_dir, url)
        with agent.start_session():
            refund("o", 1)
            server.terminate()
            server.wait(10)
            with pytest.raises(PermissionDeniedError) as refused:
                refund("o", 2)
    assert ran == [1]
    message = str(refused.value)
    assert message.startswith(f"write:refunds budget: cannot debit it: state store {url}")
    assert "\n" not in message


def test_audit_mode_records_an_unreachable_store_and_lets_the_call_run(
    issuer: Issuer, key_dir: KeyDirectory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit mode enforces nothing, scopes or budgets: the outage is recorded, not hidden."""

    @sudo(scope="write:refunds", on_deny="log")
    def refund_logged(order_id: str, amount: int) -> None:
        ran.append(amount)

    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    monkeypatch.setenv("AGENTSUDO_STORE", f"redis://127.0.0.1:{free_port()}/0")
    with budgeted(issuer, key_dir, None).start_session():
        refund_logged("o", 1)
    set_audit_log(None)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["outcome"], e.get("reason")) for e in events[1:-1]] == [
        ("audit_violation", "ledger unavailable"),
        ("allowed", None),
    ]
    assert ran == [1]


# -- the race: 8 processes, one token, through @sudo ------------------------------------


@pytest.fixture(scope="module")
def racers() -> Iterator[Any]:
    """8 spawned processes, kept for every round of every backend, and their barrier."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    with context.Pool(RACERS, initializer=start, initargs=(barrier,)) as pool:
        yield pool
        pool.close()
        pool.join()


def test_eight_processes_spend_exactly_the_budget_through_the_guard(
    racers: Any, issuer: Issuer, key_dir: KeyDirectory, store_url: str, budgets: Budgets
) -> None:
    contested = 0
    for number in range(ROUNDS):
        token = issuer.issue(
            "SupportBot",
            ["write:refunds"],
            limits=Limits.parse([], budgets=["write:refunds amount=100"]),
        ).token
        how = "verifier" if number % 2 else "env"
        jobs = [(store_url, how, token, str(key_dir.jwks_path))] * RACERS
        results = racers.map_async(race, jobs, chunksize=1).get(timeout=300)
        runs = [result[0] for result in results]
        assert all(result[1] == "BudgetExhaustedError" for result in results), results
        assert sum(runs) == 100, f"round {number} ({how}): {runs}"
        jti = Agent.from_token(token, verifier=Verifier(JwksFile(key_dir.jwks_path))).jti
        assert jti is not None
        assert budgets.balance(jti, "0") == Balance(
            {"sum:amount": 100 * UNIT}, {"sum:amount": 100 * UNIT}
        )
        contested += sum(1 for won in runs if won) >= 2
    assert contested >= 1, "no round had two processes running calls: not a race"

"""The race: 8 processes spend one budget at once, round after round, on SQLite and Redis.

Every process debits one step at a time until refused. However the debits
interleave, exactly the budget goes through: never one more, never one less.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest
from budget_racer import race, start

from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.budgets import Balance, Budgets

PROCESSES = 8
ROUNDS = 6
BUDGET = 100


@pytest.fixture(scope="module")
def racers() -> Iterator[Any]:
    """8 spawned processes, kept for every round of every backend, and their barrier."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    with context.Pool(PROCESSES, initializer=start, initargs=(barrier,)) as pool:
        yield pool
        pool.close()
        pool.join()


def _round(
    pool: Any, url: str, jti: str, step: dict[str, int], limits: dict[str, int]
) -> list[int]:
    """Each process's successes; the barrier makes each take exactly one job."""
    jobs = [(url, jti, step, limits)] * PROCESSES
    return list(pool.map_async(race, jobs, chunksize=1).get(timeout=180))


def test_exactly_the_budget_goes_through(racers: Any, store_url: str) -> None:
    budgets = Budgets(open_store(store_url))
    contested = 0
    for number in range(ROUNDS):
        jti = f"race-{number}"
        wins = _round(racers, store_url, jti, {"calls": 1}, {"calls": BUDGET})
        assert sum(wins) == BUDGET, f"round {number}: {wins}"
        assert budgets.balance(jti, "0") == Balance({"calls": BUDGET}, {"calls": BUDGET})
        contested += sum(1 for won in wins if won) >= 2
    assert contested >= 1, "no round had two processes winning: not a race"
    budgets.store.close()


def test_several_counters_race_all_or_nothing(racers: Any, store_url: str) -> None:
    """3 per call against 250: the amount runs out first, at 83 calls; calls never over-count."""
    limits = {"amount": 250, "calls": BUDGET}
    wins = _round(racers, store_url, "race-multi", {"amount": 3, "calls": 1}, limits)
    assert sum(wins) == 83
    with open_store(store_url) as store:
        assert Budgets(store).balance("race-multi", "0") == Balance(
            limits, {"amount": 249, "calls": 83}
        )

"""The racing process of ``test_budget_race.py`` (imported by pool workers, not collected).

Each worker of a spawned ``multiprocessing`` pool gets the shared barrier at start;
``race`` connects, waits at the barrier for all the others, then debits one step at
a time until refused, and returns how many of its debits went through.
"""

from __future__ import annotations

import time
from typing import Any

_barrier: Any = None


def start(barrier: Any) -> None:
    """The pool's initializer: keep the barrier every racer waits at."""
    global _barrier
    _barrier = barrier


def race(job: tuple[str, str, dict[str, int], dict[str, int]]) -> int:
    """Debit ``step`` against ``limits`` under token ``jti`` until refused; the successes."""
    from agentsudo_tokens.state import open_store
    from agentsudo_tokens.state.budgets import Budgets

    url, jti, step, limits = job
    with open_store(url) as store:
        budgets = Budgets(store)
        budgets.balance("warm-up", "0")  # connected (and the SQLite file open) before the start
        expires_at = time.time() + 600
        _barrier.wait(timeout=120)
        won = 0
        while budgets.spend(jti, "0", step, limits, expires_at=expires_at) is not None:
            won += 1
    return won

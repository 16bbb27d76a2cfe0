"""Carving a child's budget out of its parent's remainder, at exchange time.

    ledger = Ledger(broker.store, parent, leeway)
    ledger.check(narrowed.carves)      # DelegationRefusedError(reason="budget"): more than is left
    ... mint the child ...
    carved = ledger.carve(narrowed.carves)   # the parent's entries debited, atomically each

Each carve debits one budget entry of the parent token (its ``jti`` and entry
id) in the broker's store by the child's amounts (``state.budgets.Budgets``,
atomic on every backend), so the parent's remainder drops by what the child
may spend. ``check`` refuses before anything is debited when the remainder is
short; ``carve`` refuses when another exchange (or a call) took it meanwhile.
Two exchanges racing for the last remainder: at most one wins. With several
carves, one refused after others succeeded leaves those debits standing (fail
closed: the parent loses budget, never gains; as with a call's several budgets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import DelegationRefusedError
from ..state import Store
from ..tokens.claims import VerifiedClaims
from ..tokens.limits import LIMITS_CLAIM, Limits
from ..tokens.limits_narrow import Carve, counter_text

__all__ = ["Ledger", "limit_lines"]


def limit_lines(claims: Mapping[str, Any]) -> list[str] | None:
    """A minted token's limits as grammar lines (budgets too), for the audit."""
    if LIMITS_CLAIM not in claims:
        return None
    lines = []
    for entry in Limits.from_claim(claims[LIMITS_CLAIM]):
        if entry.constraints:
            lines.append(entry.text())
        if entry.budget is not None:
            lines.append(f"{entry.scope} budget {entry.budget.text()}")
    return lines


def _amounts(amounts: Mapping[str, int]) -> str:
    return ", ".join(counter_text(name, value) for name, value in sorted(amounts.items()))


class Ledger:
    """The parent token's budgets in the broker's store, for carving its child's share."""

    def __init__(self, store: Store, parent: VerifiedClaims, leeway: int) -> None:
        self.parent = parent
        self.store = store
        self.expires_at = parent.expires_at + leeway  # the entry outlives every use of it

    def _budgets(self) -> Any:
        from ..state.budgets import Budgets

        return Budgets(self.store)

    def _short(self, carve: Carve, left: Mapping[str, int]) -> DelegationRefusedError:
        limits = carve.entry.budget.counters()  # type: ignore[union-attr]
        over = sorted(name for name, amount in carve.amounts.items() if amount > left[name])
        name = over[0] if over else sorted(carve.amounts)[0]
        return DelegationRefusedError(
            f"the child's budget asks {counter_text(name, carve.amounts[name])} of the parent "
            f"token's budget on {carve.entry.scope}, which has {counter_text(name, left[name])} "
            f"left of {counter_text(name, limits[name]).partition(' ')[2]}",
            reason="budget",
            agent=self.parent.agent,
            scope=carve.entry.scope,
            expected=left[name],
            found=carve.amounts[name],
        )

    def _left(self, budgets: Any, carve: Carve) -> dict[str, int]:
        limits = carve.entry.budget.counters()  # type: ignore[union-attr]
        balance = budgets.balance(self.parent.jti, carve.entry_id)
        spent = {} if balance is None else balance.spent
        return {name: max(0, limit - spent.get(name, 0)) for name, limit in limits.items()}

    def check(self, carves: Iterable[Carve]) -> None:
        """Refuse, debiting nothing, when a carve asks more than its entry has left now.

        :raises DelegationRefusedError: ``reason="budget"``.
        :raises StoreUnavailableError: the store cannot be reached (refused: fail closed).
        """
        carves = tuple(carves)
        if not carves:
            return
        budgets = self._budgets()
        for carve in carves:
            left = self._left(budgets, carve)
            if any(amount > left[name] for name, amount in carve.amounts.items()):
                raise self._short(carve, left)

    def carve(self, carves: Iterable[Carve]) -> tuple[dict[str, Any], ...]:
        """Debit each carve from the parent's entry, atomically each; what was debited.

        :raises DelegationRefusedError: ``reason="budget"``: the remainder was taken
            meanwhile (that carve debited nothing).
        :raises StoreUnavailableError: the store cannot be reached.
        """
        carves = tuple(carves)
        if not carves:
            return ()
        budgets = self._budgets()
        done = []
        for carve in carves:
            limits = carve.entry.budget.counters()  # type: ignore[union-attr]
            try:
                balance = budgets.spend(
                    self.parent.jti, carve.entry_id, carve.amounts, limits,
                    expires_at=self.expires_at,
                )  # fmt: skip
            except ValueError as exc:  # what the store cannot count: refused, never a 500
                raise DelegationRefusedError(
                    f"the parent token's budget on {carve.entry.scope} cannot be carved: {exc}",
                    reason="budget",
                    agent=self.parent.agent,
                ) from None
            if balance is None:
                raise self._short(carve, self._left(budgets, carve))
            done.append(
                {
                    "entry": carve.entry_id,
                    "scope": carve.entry.scope,
                    "amounts": _amounts(carve.amounts),
                }
            )
        return tuple(done)

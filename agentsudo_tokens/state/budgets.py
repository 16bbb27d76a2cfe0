"""Budgets' ledger: what each token has spent, debited atomically in the store.

    budgets = Budgets(store)
    balance = budgets.spend(jti, "0", {"amount": 50, "calls": 1},
                            {"amount": 500, "calls": 20}, expires_at=exp + MAX_LEEWAY)
    if balance is None: ...            # it would overspend: refuse the call; nothing was debited
    balance.left("amount")             # 450
    budgets.balances(jti)              # {"0": Balance(...)}: every entry of the token

One store entry per (token, entry), key ``budget:<jti>:<entry>``, whose value
is ``{"limits":{...},"spent":{...}}``; ``Store.spend`` checks and adds in one
atomic step on every backend, so no number of processes or machines can spend
past a limit. Units are whatever integers the caller uses (the token layer
scales decimals to integer micro-units). A store that cannot be reached raises
``StoreUnavailableError``: callers refuse the call (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .base import Store, decode_budget

__all__ = ["BUDGET", "MAX_ENTRY", "MAX_JTI", "Balance", "Budgets"]

BUDGET = "budget:"
MAX_JTI = 256  # as claims.MAX_NAME
MAX_ENTRY = 64


@dataclass(frozen=True)
class Balance:
    """One budget entry of a token: its limits and what has been spent, per counter."""

    limits: dict[str, int]
    spent: dict[str, int]

    def left(self, name: str) -> int:
        """What may still be spent on counter ``name`` (never below 0).

        :raises KeyError: the entry has no limit called ``name``.
        """
        return max(0, self.limits[name] - self.spent.get(name, 0))


class Budgets:
    """Spending against the budgets in tokens, kept in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def spend(
        self,
        jti: str,
        entry: str,
        amounts: Mapping[str, int],
        limits: Mapping[str, int],
        *,
        expires_at: float,
    ) -> Balance | None:
        """Debit ``amounts`` from the token's entry if every counter stays within ``limits``.

        :returns: the balance after, or ``None`` when it would overspend (nothing changed).
        :raises ValueError: a bad ``jti``, ``entry``, amount, limit or ``expires_at``
            (see ``Store.spend``).
        :raises StoreUnavailableError: the store cannot be reached: refuse the call.
        """
        spent = self.store.spend(_key(jti, entry), amounts, limits, expires_at=expires_at)
        return None if spent is None else Balance(dict(limits), spent)

    def balance(self, jti: str, entry: str) -> Balance | None:
        """The token's entry as it stands, or ``None`` if nothing was ever spent (or it expired).

        :raises ValueError: a bad ``jti`` or ``entry``.
        :raises StoreUnavailableError: the store cannot be reached.
        """
        found = self.store.spent(_key(jti, entry))
        return None if found is None else Balance(*found)

    def balances(self, jti: str) -> dict[str, Balance]:
        """Every live entry of the token, by entry id (sorted); empty when none.

        :raises ValueError: a bad ``jti``.
        :raises StoreUnavailableError: the store cannot be reached.
        """
        prefix = _key(jti, "0")[:-1]
        return {
            key[len(prefix) :]: Balance(*decode_budget(value, self.store.url, key))
            for key, value in self.store.items(prefix).items()
        }


def _key(jti: str, entry: str) -> str:
    """``budget:<jti>:<entry>``.

    :raises ValueError: ``jti`` or ``entry`` is not 1 to its maximum of printable
        ASCII characters, or ``jti`` holds a ``:``.
    """
    _check("jti", jti, MAX_JTI)
    _check("entry", entry, MAX_ENTRY)
    if ":" in jti:
        raise ValueError(f"jti: expected no ':', found {jti!r}")
    return f"{BUDGET}{jti}:{entry}"


def _check(what: str, text: object, longest: int) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected a string, found {type(text).__name__}")
    if not 1 <= len(text) <= longest or not all(" " <= c <= "~" for c in text):
        shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
        raise ValueError(
            f"{what}: expected 1 to {longest} printable ASCII characters, "
            f"found {shown} ({len(text)} characters)"
        )

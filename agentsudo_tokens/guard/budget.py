"""Debiting a token's budgets for a guarded call, before it runs.

    debit(agent, "write:refunds", costs)     # every budgeted entry, or BudgetExhaustedError

Where the ledger lives: with ``AGENTSUDO_BROKER`` set (an agent under a
broker), the broker keeps it (``BrokerClient.spend``); else the state store of
the verifier that accepted the token, else the store the settings name
(``AGENTSUDO_STORE``, else the key directory's ``agentsudo-state.db``), opened
once per process. A budget entry lives until the token's ``exp`` plus the
leeway.

Debits are final: a call that raises afterwards is not refunded (it may have
acted before raising). When several budgeted entries apply and a later one
refuses, the earlier debits stand: the agent loses budget, never gains. A
ledger that cannot be reached refuses the call (fail closed).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Settings
from ..errors import AgentSudoError, BudgetExhaustedError, PermissionDeniedError
from ..tokens.limit_entry import json_number, overspent

if TYPE_CHECKING:
    from ..state.base import Store
    from ..state.budgets import Balance
    from ..tokens.limits import Limits
    from ..tokens.verifier import Verifier

__all__ = ["Ledger", "debit", "ledger_for", "reset_default_ledger", "spent_words"]

Costs = list[tuple[str, dict[str, int], dict[str, int]]]  # Limits.costs: (entry, amounts, limits)


class Ledger(Protocol):
    """Where budgets are kept: ``state.budgets.Budgets``, or the broker's."""

    def spend(
        self,
        jti: str,
        entry: str,
        amounts: Mapping[str, int],
        limits: Mapping[str, int],
        *,
        expires_at: float,
    ) -> Balance | None: ...

    def balance(self, jti: str, entry: str) -> Balance | None: ...


class Spender(Protocol):
    """What a debit needs of the agent (an ``Agent`` is one; this module never imports it)."""

    @property
    def name(self) -> str: ...

    @property
    def jti(self) -> str | None: ...

    @property
    def token(self) -> str | None: ...

    _verifier: Verifier | None
    _valid_until: float


class _Default:
    """The settings' store, opened once per process (``reset_default_ledger`` forgets it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.store: Store | None = None

    def get(self) -> Store:
        store = self.store
        if store is None:
            from ..state import open_settings_store

            with self.lock:
                store = self.store
                if store is None:
                    store = self.store = open_settings_store(Settings.from_env())
        return store


_default = _Default()


def reset_default_ledger() -> None:
    """Forget the process's default store (tests; a changed ``AGENTSUDO_STORE``)."""
    with _default.lock:
        _default.store = None


def _broker_spend(agent: Spender, scope: str, arguments: Mapping[str, Any]) -> None:
    """Debit the call at the broker, which counts the cost from the token's own limits.

    :raises BudgetExhaustedError: the broker's refusal, in its one line.
    """
    from ..broker.client import BrokerClient
    from .process_key import process_key

    token = agent.token
    if token is None:
        raise PermissionDeniedError("budgets need the agent's token", agent=agent.name)
    key = process_key()
    bound = _bound(agent)
    sent = {
        name: json_number(value) if isinstance(value, Decimal) else value
        for name, value in arguments.items()
    }
    client = BrokerClient.from_settings(Settings.from_env())
    client.spend(token, scope, sent, dpop_key=key if bound else None)


def _bound(agent: Spender) -> bool:
    claims = getattr(agent, "claims", None)
    return getattr(claims, "jkt", None) is not None


def ledger_for(agent: Spender) -> Ledger:
    """The ledger of ``agent``'s budgets (see the module's docstring).

    :raises ConfigError: ``AGENTSUDO_STORE`` is not a store URL.
    """
    from ..state.budgets import Budgets

    verifier = agent._verifier
    store = verifier.store if verifier is not None else None
    return Budgets(store if store is not None else _default.get())


def spent_words(
    scope: str, amounts: Mapping[str, int], balance: Balance | None
) -> tuple[str, str, str]:
    """Why a debit was refused: (argument, limit, one line) for the first counter that would
    pass its limit (``limit_entry.overspent``: the broker words it the same)."""
    if balance is None:
        return "calls", f"{scope} budget", f"{scope} budget: this call would overspend it"
    return overspent(scope, amounts, balance.limits, balance.spent)


def debit(
    agent: Spender,
    scope: str,
    costs: Costs,
    *,
    limits: Limits,
    arguments: Mapping[str, Any],
) -> None:
    """Debit every budgeted entry of the call, in order, each atomically.

    :param costs: ``limits.costs(scope, arguments)``, already checked.
    :param limits: the token's limits (each entry's scope names it in a refusal).
    :param arguments: the call's arguments (the broker counts the budgeted ones itself).
    :raises BudgetExhaustedError: an entry would overspend (earlier debits stand).
    :raises PermissionDeniedError: the ledger cannot be reached (fail closed).
    """
    jti = agent.jti
    if jti is None:  # never: limits come only with a verified token
        raise PermissionDeniedError("budgets need a token with a jti", agent=agent.name)
    expires_at = agent._valid_until
    try:
        if Settings.from_env().broker is not None:
            _broker_spend(agent, scope, limits.budgeted_arguments(scope, arguments))
            return
        ledger = ledger_for(agent)
        scopes = {entry_id: entry.scope for entry_id, entry in limits.for_scope(scope)}
        for entry, amounts, counters in costs:
            if ledger.spend(jti, entry, amounts, counters, expires_at=expires_at) is not None:
                continue
            balance = ledger.balance(jti, entry)
            argument, limit, words = spent_words(scopes[entry], amounts, balance)
            raise BudgetExhaustedError(
                words,
                argument=argument,
                limit=limit,
                agent=agent.name,
                scope=scope,
                expected="budget left",
                found="spent",
            )
    except BudgetExhaustedError:
        raise
    except (AgentSudoError, ValueError, OSError) as exc:  # the ledger is down: fail closed
        raise PermissionDeniedError(
            f"{scope} budget: cannot debit it: {_one_line(exc)}",
            agent=agent.name,
            scope=scope,
            expected="a ledger that answers",
            found="ledger unavailable",
        ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]

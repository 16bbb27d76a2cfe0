"""A token's limits on a guarded call: its constraints, then its budgets, before it runs.

    plan = spots.plan(active.limits, scope)
    if plan is not None and (plan.budgeted or not plan.passes(args, kwargs)):
        enforce(active, plan.limits, scope, plan.arguments(args, kwargs), policy, ...)

Every entry that applies to the scope must hold. A broken constraint, a
budgeted argument that is missing or not a number, or a budget that would be
overspent is a denial that goes through the guard's ``on_deny`` like a missing
scope: ``"raise"`` raises ``LimitExceededError`` (``BudgetExhaustedError``);
``"log"`` records an ``audit_violation`` and lets the call run (a refused budget
is then not debited); an approver or ``"ask"`` may approve that one call (the
context's ``reason`` is the refusal, ``limit`` and ``argument`` say which).
A ledger that cannot be reached is a denial no approver is asked about. A
call whose costs the request's HTTP guard already debited is not debited
again (``prepaid``: one request, one debit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import LimitExceededError, PermissionDeniedError
from . import prepaid
from .budget import debit
from .decision import Policy, _Denial

if TYPE_CHECKING:
    from ..tokens.limits import Limits
    from .agent import _Active

__all__ = ["enforce", "enforce_async"]


def _constraints(
    active: _Active, limits: Limits, scope: str, arguments: Mapping[str, Any]
) -> _Denial | None:
    try:
        limits.check(scope, arguments, agent=active.agent.name)
    except LimitExceededError as exc:
        return _Denial(active, exc, True)
    return None


def _budgets(
    active: _Active, limits: Limits, scope: str, arguments: Mapping[str, Any]
) -> _Denial | None:
    """Debit every budget that applies; the denial when one refuses (or cannot be asked)."""
    try:
        costs = limits.costs(scope, arguments, agent=active.agent.name)
        jti = active.agent.jti
        if costs and not (jti is not None and prepaid.take(jti, scope, costs)):  # not the request's
            debit(active.agent, scope, costs, limits=limits, arguments=arguments)
    except LimitExceededError as exc:
        return _Denial(active, exc, True)
    except PermissionDeniedError as exc:  # the ledger cannot be reached: no approver can help
        return _Denial(active, exc, False)
    return None


def enforce(
    active: _Active,
    limits: Limits,
    scope: str,
    arguments: Mapping[str, Any],
    policy: Policy,
    function: str,
    args: Any,
    kwargs: Any,
) -> None:
    """Check the constraints, then debit the budgets; a denial goes to ``policy``.

    :raises LimitExceededError: a constraint or a budget refused the call.
    :raises PermissionDeniedError: the ledger cannot be reached, or the approver said no.
    """
    denial = _constraints(active, limits, scope, arguments)
    if denial is not None:
        policy.decide(denial, function, args, kwargs)
    denial = _budgets(active, limits, scope, arguments)
    if denial is not None:
        policy.decide(denial, function, args, kwargs)


async def enforce_async(
    active: _Active,
    limits: Limits,
    scope: str,
    arguments: Mapping[str, Any],
    policy: Policy,
    function: str,
    args: Any,
    kwargs: Any,
) -> None:
    """As ``enforce``; an approver runs without blocking the loop (the debit itself is short)."""
    denial = _constraints(active, limits, scope, arguments)
    if denial is not None:
        await policy.decide_async(denial, function, args, kwargs)
    denial = _budgets(active, limits, scope, arguments)
    if denial is not None:
        await policy.decide_async(denial, function, args, kwargs)

"""Debits a request's HTTP guard already made, so one call is not debited twice.

    with request_debits():                      # AgentSudoMiddleware, around each request
        ...  paid(jti, scope, costs)            # require_scope, once it has debited them
        ...  if not take(jti, scope, costs):    # @sudo in the handler: the request's own call?
                 debit(...)

A route guarded by ``require_scope`` debits the scope's budgets with the
request's arguments; a handler that then calls an ``@sudo`` function of that
scope with the same costs (same token, same entries, same amounts) makes the
very call the request asked for, which is not debited again. Each debit made
by the guard covers one such call: a second call with the same costs, or any
call with other costs, is debited as usual. Outside ``request_debits`` (no
middleware) nothing is recorded and every call is debited.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Mapping, Sequence

__all__ = ["paid", "request_debits", "take"]

Costs = Sequence[tuple[str, Mapping[str, int], Mapping[str, int]]]  # Limits.costs
_Key = tuple[str, str, tuple[tuple[str, tuple[tuple[str, int], ...]], ...]]

_debits: contextvars.ContextVar[list[_Key] | None] = contextvars.ContextVar(
    "agentsudo_request_debits", default=None
)
_lock = threading.Lock()  # a handler's threads share the request's list


def _key(jti: str, scope: str, costs: Costs) -> _Key:
    return jti, scope, tuple((entry, tuple(sorted(amounts.items()))) for entry, amounts, _ in costs)


@contextlib.contextmanager
def request_debits() -> Iterator[None]:
    """One request: the debits its guard makes are recorded for the calls it serves."""
    reset = _debits.set([])
    try:
        yield
    finally:
        _debits.reset(reset)


def paid(jti: str, scope: str, costs: Costs) -> None:
    """Record that the request's guard debited ``costs`` on ``scope`` for token ``jti``."""
    found = _debits.get()
    if found is not None:
        with _lock:
            found.append(_key(jti, scope, costs))


def take(jti: str, scope: str, costs: Costs) -> bool:
    """True (once per recorded debit) when the request's guard already debited these costs."""
    found = _debits.get()
    if not found:
        return False
    key = _key(jti, scope, costs)
    with _lock:
        if key not in found:
            return False
        found.remove(key)
    return True

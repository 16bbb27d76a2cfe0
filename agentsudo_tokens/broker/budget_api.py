"""Budgets debited at the broker, for agents under one: the broker's store is the ledger.

    POST /v1/budgets/spend     Authorization: Bearer <token>   (or "token" in the body)
        {"scope": "write:refunds", "arguments": {"amount": 50}}
    -> 200 {"jti": ..., "balances": {"0": {"scope", "budget", "limits", "spent", "left"}}}
    -> 403 {"agentsudo_error": "BudgetExhaustedError", "detail": "<one line>", ...}

    GET /v1/budgets/<jti>       the token's holder (Authorization: Bearer <that token>),
                                or an admin of the broker (its uid, or a broker credential)
    -> 200 {"jti": ..., "balances": {...}}

An agent's own store is not to be trusted with its budget: a guard under a
broker asks it to debit. The broker verifies the token (signature, expiry,
revocation of it and its chain; a token bound to a key needs a DPoP proof of it
for this request), computes what the call costs from the token's own limits
(``Limits.costs``: the caller's numbers are only the call's arguments), and
debits every budgeted entry that applies in its store (``state.budgets``),
atomically each. A denial is a 403 problem naming the budget and the value;
when a later entry refuses, the earlier debits stand (fail closed: the token
loses budget, never gains). Constraints are not checked here: the guard did,
and a human may have approved one call over a limit; a spend only ever costs
the token's own budget.

Requests are rate limited per caller in their own buckets (a spend comes with
every guarded call: ``spend_rate``, twenty times the issuance rate): on the
socket by uid, over TCP by address, then by the token's root agent at that
address. Bad input (missing fields, wrong types, a huge body) is a 400 problem.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import (
    AgentSudoError,
    BudgetExhaustedError,
    InvalidScopeError,
    InvalidTokenError,
    StateRequiredError,
)
from ..state import Store
from ..tokens.claims import MAX_NAME, VerifiedClaims
from ..tokens.constraints import ARGUMENT
from ..tokens.jws import MAX_TOKEN_BYTES
from ..tokens.limit_entry import overspent
from ..tokens.revocation import check_revoked
from ..tokens.scopes import MAX_SCOPE_LENGTH, validate_required_scope
from ..tokens.verifier import decode_unverified
from .binding import require_possession
from .bodies import json_body, model_of
from .peer import _peer_key, peer_of
from .problems import Problem, TooMany

__all__ = ["BUDGETS_PATH", "SPEND_PATH", "balances_endpoint", "spend_endpoint"]

SPEND_PATH = "/v1/budgets/spend"
BUDGETS_PATH = "/v1/budgets/{jti}"
MAX_ARGUMENTS = 64
_BROKER_AUDIENCE = "agentsudo-broker"  # app.BROKER_AUDIENCE (app imports this module)


class _SpendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    token: str | None = Field(default=None, max_length=MAX_TOKEN_BYTES)
    scope: str = Field(min_length=1, max_length=MAX_SCOPE_LENGTH)
    arguments: dict[Annotated[str, Field(max_length=64)], int | float] = Field(
        default_factory=dict, max_length=MAX_ARGUMENTS
    )


def _limit(broker: Any, who: str) -> None:
    """One request of ``who`` from its spending bucket, or a 429."""
    limits = broker.spend_limits
    wait = limits.take(("budget", who))
    if wait <= 0:
        return
    rule = f"at most {limits.burst} at once, then {limits.rate:g} a second"
    broker.quiet.refuse(
        "over the rate limit of budgets",
        who,
        action="budget",
        reason=f"over the rate limit: {rule}",
    )
    seconds = max(1, math.ceil(wait))
    raise TooMany(
        f"{who} is over the rate limit of budgets ({rule}); retry in {seconds} s", seconds
    )


def _who(request: Request) -> tuple[str, str | None]:
    """Whom a request counts against first: its uid on the socket, else its address."""
    peer = peer_of(request.scope)
    if peer is not None:
        return f"uid:{peer.uid}", None
    client = request.client
    address = _peer_key(None, (client.host, client.port) if client else None) or "unknown"
    return address, address


def _bearer(request: Request) -> tuple[str | None, str]:
    """The token in ``Authorization`` (``Bearer`` or ``DPoP``) and its scheme."""
    header = request.headers.get("authorization")
    if header is None:
        return None, "body"
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "dpop") or not token.strip():
        raise Problem(401, "unauthenticated", "Authorization: expected Bearer or DPoP and a token")
    if len(token) > MAX_TOKEN_BYTES:
        raise Problem(400, "invalid-request", f"the token is over {MAX_TOKEN_BYTES} bytes")
    return token.strip(), scheme.lower()


def _verified(broker: Any, token: str) -> VerifiedClaims:
    """An agent's token: verified, not revoked (nor its chain); never a broker credential."""
    from .exchange import verify_agent_token

    try:
        claims = verify_agent_token(broker, token)
    except StateRequiredError:
        raise Problem(
            403, "forbidden", "a one-time token has no budget at the broker: it is used once"
        ) from None
    if _BROKER_AUDIENCE in claims.audience:
        raise Problem(
            403, "forbidden", "a broker credential has no budget: present an agent's token"
        )
    check_revoked(broker.store, claims)
    return claims


async def _authenticated(request: Request, broker: Any, token: str, scheme: str) -> VerifiedClaims:
    try:
        claims = await asyncio.to_thread(_verified, broker, token)
    except InvalidTokenError as exc:  # named, so a client raises the same class
        raise Problem(401, "invalid-token", str(exc), agentsudo_error=type(exc).__name__) from None
    await require_possession(request, broker.proofs, token, claims, scheme)
    if peer_of(request.scope) is None:  # over TCP: by its root agent at that address too
        _, address = _who(request)
        _limit(broker, f"agent:{claims.subject} at {address}")
    return claims


def _exhausted(
    claims: VerifiedClaims, entry: Any, scope: str, amounts: dict[str, int], spent: dict[str, int]
) -> BudgetExhaustedError:
    """The refusal, worded as a guard debiting a store words it (``limit_entry.overspent``)."""
    limits = entry.budget.counters()
    argument, limit, words = overspent(entry.scope, amounts, limits, spent)
    return BudgetExhaustedError(
        words,
        argument=argument,
        limit=limit,
        agent=claims.agent,
        scope=scope,
        expected="budget left",
        found="spent",
    )


def _balance_body(entry: Any, limits: dict[str, int], spent: dict[str, int]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "limits": dict(limits),
        "spent": {name: spent.get(name, 0) for name in limits},
        "left": {name: max(0, limit - spent.get(name, 0)) for name, limit in limits.items()},
    }
    if entry is not None:
        body["scope"] = entry.scope
        body["budget"] = entry.budget.text()
    return body


def _spend(broker: Any, claims: VerifiedClaims, scope: str, arguments: dict[str, Any]) -> Any:
    """Debit what the call costs; the balances after, by entry id.

    :raises BudgetExhaustedError: a budgeted argument missing or bad, or a budget short.
    """
    from ..state.budgets import Budgets

    if claims.limits is None:
        return {}
    entries = dict(claims.limits.for_scope(scope))
    costs = claims.limits.costs(scope, arguments, agent=claims.agent)
    budgets = Budgets(broker.store)
    expires_at = claims.expires_at + broker.config.settings.leeway
    balances = {}
    for entry_id, amounts, limits in costs:
        try:
            balance = budgets.spend(claims.jti, entry_id, amounts, limits, expires_at=expires_at)
        except ValueError as exc:  # the store's check of what the token says: not spendable
            raise Problem(400, "invalid-request", f"budget {entry_id}: {exc}") from None
        if balance is None:
            found = budgets.balance(claims.jti, entry_id)
            spent = {} if found is None else found.spent
            raise _exhausted(claims, entries[entry_id], scope, amounts, spent)
        balances[entry_id] = _balance_body(entries[entry_id], limits, balance.spent)
    return balances


def _refusal(exc: BudgetExhaustedError) -> Problem:
    return Problem(
        403,
        "budget-exhausted",
        str(exc),
        agentsudo_error=type(exc).__name__,
        argument=exc.argument,
        limit=exc.limit,
        scope=exc.scope,
    )


async def spend_endpoint(request: Request, broker: Any) -> Response:
    """``POST /v1/budgets/spend`` (see the module docs)."""
    who, _ = _who(request)
    _limit(broker, who)  # before any work
    asked = model_of(_SpendRequest, await json_body(request, broker))
    token, scheme = _bearer(request)
    if asked.token is not None:
        if token is not None and token != asked.token:
            raise Problem(400, "invalid-request", "two different tokens: give it once")
        token = asked.token
    if token is None:
        raise Problem(401, "unauthenticated", "present the token (Authorization: Bearer, or token)")
    try:
        scope = validate_required_scope(asked.scope)
    except InvalidScopeError as exc:
        raise Problem(400, "invalid-request", f"scope: {exc}") from None
    for name, value in asked.arguments.items():
        if ARGUMENT(name) is None:
            raise Problem(400, "invalid-request", f"arguments: expected names, found {name[:40]!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Problem(400, "invalid-request", f"arguments.{name}: expected a finite number")
    claims = await _authenticated(request, broker, token, scheme)
    try:
        balances = await asyncio.to_thread(_spend, broker, claims, scope, dict(asked.arguments))
    except BudgetExhaustedError as exc:
        raise _refusal(exc) from None
    body = {"jti": claims.jti, "balances": balances}
    return JSONResponse(body, headers={"cache-control": "no-store"})


def _stored(store: Store, jti: str) -> dict[str, Any]:
    from ..state.budgets import Budgets

    try:
        return dict(Budgets(store).balances(jti))
    except ValueError:
        raise Problem(
            400, "invalid-request", f"expected a token's jti, found {jti[:40]!r}"
        ) from None


async def balances_endpoint(request: Request, broker: Any, *, admin: Any) -> Response:
    """``GET /v1/budgets/<jti>``: for the token's holder, or an admin (``admin(request,
    broker)`` raises unless the caller is one)."""
    jti = str(request.path_params["jti"])
    if not 0 < len(jti) <= MAX_NAME:
        raise Problem(
            400, "invalid-request", f"expected a token's jti, found {len(jti)} characters"
        )
    who, _ = _who(request)
    _limit(broker, who)
    token, scheme = _bearer(request)
    holder = None
    if token is not None:
        try:
            holder = decode_unverified(token).claims.get("jti") == jti
        except (AgentSudoError, InvalidTokenError):
            holder = False
    if holder:
        claims = await _authenticated(request, broker, str(token), scheme)
        stored = await asyncio.to_thread(_stored, broker.store, jti)
        balances = {}
        for entry_id, entry in claims.limits.budgeted if claims.limits else ():
            found = stored.get(entry_id)
            spent = found.spent if found is not None else {}
            counters = entry.budget.counters() if entry.budget is not None else {}
            balances[entry_id] = _balance_body(entry, counters, spent)
    else:
        admin(request, broker)
        stored = await asyncio.to_thread(_stored, broker.store, jti)
        balances = {key: _balance_body(None, b.limits, b.spent) for key, b in stored.items()}
    return JSONResponse({"jti": jti, "balances": balances}, headers={"cache-control": "no-store"})

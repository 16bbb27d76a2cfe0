"""Token exchange at the broker (RFC 8693): a narrower token for a sub-agent.

    POST /v1/oauth/token   (application/x-www-form-urlencoded)
        grant_type=urn:ietf:params:oauth:grant-type:token-exchange
        subject_token=<the parent token>
        subject_token_type=urn:ietf:params:oauth:token-type:access_token   (or ...:jwt)
        scope=read:orders              optional: default the parent's scopes
        audience=billing               optional, repeatable: default the parent's audience
        requested_token_type=...       optional: access_token (default) or jwt
        actor=Summarizer               extension: the sub-agent; default the parent's agent
        expires_in=300                 extension: seconds; default the broker's TTL, cut
                                       to what the parent has left
    -> 200 {"access_token", "issued_token_type", "token_type": "Bearer",
            "expires_in", "scope"}

The subject token is the credential: whoever holds a token may exchange it
for less, on the socket or over TCP, with no broker credential. The broker
verifies it as any verifier does, then checks its store: not revoked (nor an
ancestor, nor an agent of its chain), not one-time, not a broker credential.
The child is narrowed by ``tokens.delegation.narrow`` (scopes, audience and
``exp`` within the parent's; the chain one deeper) within what the ROOT
agent's policy lets it pass on (``delegable``, ``max_depth``).

Errors are RFC 6749 §5.2 error responses (``application/json``, 400 but for
429 and 503), as OAuth clients expect at a token endpoint, with RFC 8693
§2.2.2's codes (``invalid_request``; ``invalid_scope`` for scopes beyond the
parent or the policy; ``invalid_target`` for an audience), and, in the same
object, the broker's RFC 9457 problem members (``type``, ``title``,
``status``, ``detail``) plus ``agentsudo_error`` (the error class) and, for a
refused delegation, ``reason``: one answer that both an OAuth library and
``BrokerClient`` read. Unknown parameters are ignored (RFC 6749 §3.2);
``resource``, ``actor_token`` and ``actor_token_type`` are refused, not
ignored, as is any parameter but ``audience`` given twice.

Every exchange and every refusal is a broker audit event (``exchanged``,
``broker_refused`` with ``action: exchange``) carrying the chain; never the token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..errors import (
    AgentSudoError,
    ConfigError,
    DelegationRefusedError,
    InvalidScopeError,
    InvalidTokenError,
    StateRequiredError,
    StoreUnavailableError,
)
from ..tokens.claims import VerifiedClaims
from ..tokens.delegation import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE, MAX_DEPTH, narrow
from ..tokens.revocation import agent_cutoff, check_revoked, iso_time
from ..tokens.scopes import ScopeSet
from ..tokens.verifier import Verifier, decode_unverified
from .devmode import DevPolicy
from .exchange_request import ExchangeError, ExchangeRequest, parse_exchange_form
from .peer import peer_of
from .policy import Policy

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "EXCHANGE_PATH",
    "GRANT_TYPE",
    "JWT_TOKEN_TYPE",
    "ExchangeError",
    "ExchangeRequest",
    "delegation_rules",
    "exchange_endpoint",
    "parse_exchange_form",
]

EXCHANGE_PATH = "/v1/oauth/token"
_FORM = "application/x-www-form-urlencoded"
_BROKER_AUDIENCE = "agentsudo-broker"  # app.BROKER_AUDIENCE (app imports this module)
_log = logging.getLogger("agentsudo.broker")
_EVERYTHING = ScopeSet(["**"])
_NOTHING = ScopeSet([])


# -- the decision -------------------------------------------------------------------------


def delegation_rules(policy: Policy | DevPolicy, agent: str) -> tuple[ScopeSet, int]:
    """What ``agent``'s grant may be passed on with, and how many exchanges deep.

    Dev mode: anything, ``MAX_DEPTH`` deep (its key holder could mint anything).
    An agent the policy does not name: nothing.
    """
    if isinstance(policy, DevPolicy):
        return _EVERYTHING, MAX_DEPTH
    rules = policy.agents.get(agent)
    if rules is None:
        return _NOTHING, 0
    return ScopeSet(rules.delegable), rules.max_depth


@dataclass(frozen=True)
class _Minted:
    token: str
    claims: dict[str, Any]
    chain: tuple[str, ...]
    ttl: int


def _verified_parent(broker: Any, token: str) -> VerifiedClaims:
    """The subject token's claims: verified, not revoked (nor its chain), not one-time."""
    verifier: Verifier | None = getattr(broker, "exchange_verifier", None)
    if verifier is None:
        settings = broker.config.settings
        verifier = Verifier(
            broker.keys.public_keys(),
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            max_ttl=settings.max_ttl,
            store=None,  # revocation below, from the store; a one-time token is refused
        )
        broker.exchange_verifier = verifier
    audience = None
    try:
        found = decode_unverified(token).claims.get("aud")
        first = found[0] if isinstance(found, list) and found else found
        audience = first if isinstance(first, str) else None
    except AgentSudoError:
        pass  # verify says what is wrong with it
    try:
        claims = verifier.verify(token, audience=audience)
    except StateRequiredError:
        raise DelegationRefusedError(
            "a one-time token is used once: it cannot be exchanged",
            reason="one_time",
            expected="a token for many uses",
            found="once",
        ) from None
    if _BROKER_AUDIENCE in claims.audience:
        raise DelegationRefusedError(
            "a broker credential cannot be exchanged: present an agent's token",
            reason="broker_credential",
            agent=claims.agent,
        )
    if claims.jkt is not None:  # its holder must prove the key; a copy must not buy a child
        raise DelegationRefusedError(
            "a token bound to a key (DPoP) cannot be exchanged yet: its child would not be",
            reason="bound",
            agent=claims.agent,
            expected="a bearer token",
            found="cnf.jkt",
        )
    check_revoked(broker.store, claims)
    return claims


def _mint(broker: Any, asked: ExchangeRequest, seen: list[VerifiedClaims]) -> _Minted:
    """Verify the parent (into ``seen``), narrow, mint: in a worker thread (store, signature)."""
    parent = _verified_parent(broker, asked.subject_token)
    seen.append(parent)
    delegable, max_depth = delegation_rules(broker.policy, parent.subject)
    if not delegable.scopes:
        raise DelegationRefusedError(
            f"the policy of agent {parent.subject!r} lets it pass nothing on (no delegable)",
            reason="not_delegable",
            agent=parent.agent,
        )
    settings = broker.config.settings
    now = int(time.time())
    narrowed = narrow(
        parent,
        actor=asked.actor,
        scopes=asked.scopes,
        audience=asked.audience,
        ttl=asked.ttl,
        now=now,
        default_ttl=getattr(broker.policy, "default_ttl", settings.ttl),
        max_depth=max_depth,
        delegable=delegable,
    )
    for name in dict.fromkeys(narrowed.chain):  # a kill switch: no token born revoked
        cutoff = agent_cutoff(broker.store, name)
        if cutoff is not None and cutoff >= now:
            until = "further notice" if cutoff == math.inf else iso_time(cutoff)
            raise DelegationRefusedError(
                f"every token of agent {name!r} is revoked until {until}",
                reason="revoked_actor",
                agent=name,
            )
    audience = list(narrowed.audience)
    minted = broker.issuer.issue(
        parent.subject,
        narrowed.scopes,
        ttl=narrowed.ttl,
        audience=audience[0] if len(audience) == 1 else audience,
        now=now,
        delegation=narrowed.delegation,
    )
    return _Minted(minted.token, dict(minted.claims), narrowed.chain, narrowed.ttl)


_CLIENT_ERRORS = (
    "DelegationRefusedError",
    "ExpiredTokenError",
    "RevokedTokenError",
    "BadSignatureError",
    "UnknownKeyError",
    "MalformedTokenError",
    "NotYetValidTokenError",
    "TokenLifetimeError",
    "WrongIssuerError",
    "WrongAudienceError",
    "InvalidTokenError",
    "InvalidScopeError",
    "ConfigError",
)


def _error_of(exc: Exception) -> ExchangeError:
    """The answer to an error raised while judging an exchange."""
    if isinstance(exc, ExchangeError):
        return exc
    name = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _CLIENT_ERRORS), None)
    if isinstance(exc, DelegationRefusedError):
        error = {"scope": "invalid_scope", "not_delegable": "invalid_scope"}.get(
            exc.reason, "invalid_target" if exc.reason == "audience" else "invalid_request"
        )
        return ExchangeError(
            error, str(exc), kind="delegation-refused", cls=name, reason=exc.reason
        )
    if isinstance(exc, StoreUnavailableError):
        return ExchangeError(
            "temporarily_unavailable", str(exc), status=503, kind="state-unavailable"
        )
    if isinstance(exc, InvalidTokenError):  # RFC 8693 §2.2.2: an unacceptable subject_token
        return ExchangeError(
            "invalid_request", f"subject_token: {exc}", kind="invalid-token", cls=name
        )
    if isinstance(exc, InvalidScopeError):
        return ExchangeError("invalid_scope", str(exc), cls=name)
    if isinstance(exc, AgentSudoError):
        return ExchangeError("invalid_request", str(exc), cls=name or "ConfigError")
    return ExchangeError(
        "server_error", "the broker failed on this request; see its log", status=500,
        kind="internal",
    )  # fmt: skip


# -- the endpoint -------------------------------------------------------------------------


async def _form_body(request: Request, broker: Any) -> bytes:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != _FORM:
        raise ExchangeError("invalid_request", f"send the request as {_FORM} (RFC 6749 §4.1.3)")
    limit = broker.config.max_body
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ExchangeError(
            "invalid_request", f"a request body is at most {limit} bytes", status=413
        )

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ExchangeError(
                    "invalid_request", f"a request body is at most {limit} bytes", status=413
                )
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), broker.config.body_timeout)
    except TimeoutError:
        raise ExchangeError("invalid_request", "the body came too slowly", status=408) from None
    except ClientDisconnect:
        raise ExchangeError("invalid_request", "the client left before its body") from None


def _limit(broker: Any, who: str, *, caller: str | None, agent: str | None) -> None:
    wait = broker.limits.take(("exchange", who))
    if wait <= 0:
        return
    rule = f"at most {broker.limits.burst} at once, then {broker.limits.rate:g} a second"
    broker.quiet.refuse(
        "over the rate limit of exchange",
        who,
        action="exchange",
        reason=f"over the rate limit: {rule}",
        caller=caller,
        agent=agent,
    )
    seconds = max(1, math.ceil(wait))
    raise ExchangeError(
        "temporarily_unavailable",
        f"{who} is over the rate limit of exchange ({rule}); retry in {seconds} s",
        status=429,
        kind="too-many-requests",
        headers={"retry-after": str(seconds)},
    )


async def exchange_endpoint(request: Request) -> Response:
    """``POST /v1/oauth/token``: an RFC 8693 token exchange (see the module docs)."""
    broker = request.app.state.broker
    peer = peer_of(request.scope)
    caller = f"uid:{peer.uid}" if peer is not None else None
    asked: ExchangeRequest | None = None
    seen: list[VerifiedClaims] = []  # the parent, once verified: its chain goes in the audit
    try:
        if caller is not None:  # on the socket, by uid before any work
            _limit(broker, caller, caller=caller, agent=None)
        asked = parse_exchange_form(await _form_body(request, broker))
        if caller is None:  # over TCP, by the token's agent once it verifies
            peek = await asyncio.to_thread(_verified_parent, broker, asked.subject_token)
            _limit(broker, f"agent:{peek.subject}", caller=None, agent=peek.agent)
        minted = await asyncio.to_thread(_mint, broker, asked, seen)
    except Exception as exc:
        answer = _error_of(exc)
        if answer.status >= 500 and not isinstance(exc, AgentSudoError):
            _log.exception("POST %s failed", EXCHANGE_PATH)
        if answer.status != 429:  # a rate-limit refusal is audited quietly
            _refused(broker, caller, asked, seen[0] if seen else None, answer.description)
        return answer.response()
    parent, claims = seen[0], minted.claims
    broker.audit.record(  # before the token is handed out
        "exchanged",
        agent=minted.chain[-1],
        chain=list(minted.chain),
        jti=claims["jti"],
        parent_jti=parent.jti,
        ancestors=claims["ancestors"],
        scopes=claims["scope"].split(" "),
        audience=claims["aud"],
        ttl=minted.ttl,
        caller=caller,
    )
    body = {
        "access_token": minted.token,
        "issued_token_type": asked.issued_token_type,
        "token_type": "Bearer",
        "expires_in": minted.ttl,
        "scope": claims["scope"],
    }
    return JSONResponse(body, headers={"cache-control": "no-store", "pragma": "no-cache"})


def _refused(
    broker: Any,
    caller: str | None,
    asked: ExchangeRequest | None,
    parent: VerifiedClaims | None,
    reason: str,
) -> None:
    """A refused exchange in the broker's audit: what was asked, never the token."""
    chain: Sequence[str] | None = parent.chain if parent is not None else None
    try:
        broker.audit.record(
            "broker_refused",
            action="exchange",
            agent=parent.agent if parent is not None else None,
            chain=list(chain) if chain else None,
            asked=asked.asked() if asked is not None else None,
            reason=reason,
            caller=caller,
        )
    except ConfigError:
        pass  # StoreUnavailableError: the audit logged it; the refusal stands

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
        authorization_details=[...]    RFC 9396 §6: narrower limits and the child's budgets,
                                       a JSON array of agentsudo_limits entries as in a token
    -> 200 {"access_token", "issued_token_type", "token_type": "Bearer",
            "expires_in", "scope", "authorization_details" (when the child has limits)}

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

Limits narrow too (``tokens.limits_narrow``): the child carries every entry of
the parent that could apply to its scopes (constraints copied; a budget is never
copied), then the entries asked in ``authorization_details``; one looser than
the parent's is refused (``reason: limits``). Each parent budget that could
apply to the child's scopes needs a child budget covering it; the child's
amounts are carved out of the parent's remainder (``exchange_carving``): debited
from the parent's entry in the broker's store, atomically, after the child is
minted and before it is handed out. Asking more than is left, or no budget
where one is needed, is refused (``reason: budget``, RFC 9396's
``invalid_authorization_details``) and nothing is debited.

``actor`` names the sub-agent, never another agent of the policy (nor one
differing from it only in case) but the parent's own acting agent: a sub-agent's
elevation requests, audit lines and approvals would otherwise wear that
agent's name.

Every request takes one from a rate-limit bucket (``broker.ratelimit``) before
anything is read or verified: on the socket its uid's, over TCP its address's
(``peer._peer_key``: an IPv4 address, an IPv6 /64). Over TCP, once the token
verifies, one more from the bucket of its root agent at that address: a token
holder elsewhere (a compromised sub-agent) cannot use up its root's.

Every exchange and every refusal is a broker audit event (``exchanged``,
``broker_refused`` with ``action: exchange``) carrying the chain and what was
asked, clipped; never the token; over TCP with the ``address``. Refusals over
TCP before a token verifies (garbage, a forged or revoked token, a malformed
form) and refusals over the limit come at line rate: they are audited once per
address in a window and counted (``QuietRefusals``), as requests without a
credential are.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    DelegationRefusedError,
    InvalidScopeError,
    InvalidTokenError,
    StateRequiredError,
    StoreUnavailableError,
)
from ..tokens.claims import VerifiedClaims
from ..tokens.delegation import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE, MAX_DEPTH, narrow
from ..tokens.limits import LIMITS_CLAIM
from ..tokens.revocation import agent_cutoff, check_revoked, iso_time
from ..tokens.scopes import ScopeSet
from ..tokens.verifier import Verifier, decode_unverified
from . import exchange_carving as carving
from .audit import clipped
from .console.minted import record_minted
from .devmode import DevPolicy
from .exchange_request import ExchangeError, ExchangeRequest, parse_exchange_form
from .peer import _peer_key, peer_of
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
    "verify_agent_token",
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
    carved: tuple[dict[str, Any], ...] = ()  # the parent's budget entries debited for it


def verify_agent_token(broker: Any, token: str) -> VerifiedClaims:
    """An agent's token this broker issued, for any of its audiences (revocation not checked
    here: ``check_revoked`` with the store). A one-time token raises ``StateRequiredError``.

    :raises InvalidTokenError: not such a token.
    """
    verifier: Verifier | None = getattr(broker, "exchange_verifier", None)
    if verifier is None:
        settings = broker.config.settings
        verifier = Verifier(
            broker.keys.public_keys(),
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            max_ttl=settings.max_ttl,
            store=None,  # revocation from the store, by the caller; a one-time token is refused
        )
        broker.exchange_verifier = verifier
    audience = None
    try:
        found = decode_unverified(token).claims.get("aud")
        first = found[0] if isinstance(found, list) and found else found
        audience = first if isinstance(first, str) else None
    except AgentSudoError:
        pass  # verify says what is wrong with it
    return verifier.verify(token, audience=audience)


def _verified_parent(broker: Any, token: str) -> VerifiedClaims:
    """The subject token's claims: verified, not revoked (nor its chain), not one-time."""
    try:
        claims = verify_agent_token(broker, token)
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


def _check_actor(policy: Policy | DevPolicy, parent: VerifiedClaims, actor: str | None) -> None:
    """An actor may not take the name of another agent of the policy (nor one that differs
    from it only in case): its requests would be filed, counted and shown under that agent.

    :raises DelegationRefusedError: it does.
    """
    if actor is None or actor == parent.agent or isinstance(policy, DevPolicy):
        return
    folded = actor.casefold()
    named = next((name for name in policy.agents if name.casefold() == folded), None)
    if named is not None:
        raise DelegationRefusedError(
            f"actor {actor!r} is the name of agent {named!r} of the policy: a sub-agent "
            "acts under a name of its own",
            reason="actor",
            agent=parent.agent,
            expected="a name no other agent of the policy has",
            found=actor,
        )


def _mint(broker: Any, asked: ExchangeRequest, parent: VerifiedClaims) -> _Minted:
    """Narrow the verified parent and mint: in a worker thread (store, signature)."""
    policy = broker.policy
    _check_actor(policy, parent, asked.actor)
    delegable, max_depth = delegation_rules(policy, parent.subject)
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
        default_ttl=getattr(policy, "default_ttl", settings.ttl),
        max_depth=max_depth,
        delegable=delegable,
        limits=asked.limits,
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
    ledger = carving.Ledger(broker.store, parent, settings.leeway)
    ledger.check(narrowed.carves)  # refused before anything is debited
    audience = list(narrowed.audience)
    minted = broker.issuer.issue(
        parent.subject,
        narrowed.scopes,
        ttl=narrowed.ttl,
        audience=audience[0] if len(audience) == 1 else audience,
        now=now,
        delegation=narrowed.delegation,
        limits=narrowed.limits,
    )
    carved = ledger.carve(narrowed.carves)  # only now: a token that failed to mint costs nothing
    record_minted(broker.store, minted.claims)  # the console's live tokens: delegated ones too
    return _Minted(minted.token, dict(minted.claims), narrowed.chain, narrowed.ttl, carved)


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
        error = {
            "scope": "invalid_scope",
            "not_delegable": "invalid_scope",
            "audience": "invalid_target",
            "limits": "invalid_authorization_details",  # RFC 9396 §5
            "budget": "invalid_authorization_details",
        }.get(exc.reason, "invalid_request")
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


def _limit(
    broker: Any,
    who: str,
    *,
    caller: str | None = None,
    agent: str | None = None,
    address: str | None = None,
) -> None:
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
        address=address,
    )
    seconds = max(1, math.ceil(wait))
    raise ExchangeError(
        "temporarily_unavailable",
        f"{who} is over the rate limit of exchange ({rule}); retry in {seconds} s",
        status=429,
        kind="too-many-requests",
        headers={"retry-after": str(seconds)},
    )


def _address_of(request: Request) -> str:
    """Whom a TCP request counts against: its IPv4 address or IPv6 /64 (``peer._peer_key``)."""
    client = request.client
    return _peer_key(None, (client.host, client.port) if client else None) or "unknown"


async def exchange_endpoint(request: Request) -> Response:
    """``POST /v1/oauth/token``: an RFC 8693 token exchange (see the module docs)."""
    broker = request.app.state.broker
    peer = peer_of(request.scope)
    caller = f"uid:{peer.uid}" if peer is not None else None
    address = None if peer is not None else _address_of(request)
    asked: ExchangeRequest | None = None
    parent: VerifiedClaims | None = None  # once verified: its chain goes in the audit
    try:
        # Before any work: on the socket by uid, over TCP by address (garbage included).
        _limit(broker, caller or str(address), caller=caller, address=address)
        asked = parse_exchange_form(await _form_body(request, broker))
        parent = await asyncio.to_thread(_verified_parent, broker, asked.subject_token)
        if address is not None:  # and by its root agent from there: not by the agent alone,
            who = f"agent:{parent.subject} at {address}"  # which a sub-agent could use up
            _limit(broker, who, agent=parent.agent, address=address)
        minted = await asyncio.to_thread(_mint, broker, asked, parent)
    except Exception as exc:
        answer = _error_of(exc)
        if answer.status >= 500 and not isinstance(exc, AgentSudoError):
            _log.exception("POST %s failed", EXCHANGE_PATH)
        if answer.status == 429:
            pass  # audited quietly by _limit
        elif parent is None and address is not None:  # no token verified over TCP: quietly
            _quietly_refused(broker, address, answer.description)
        else:
            _refused(broker, caller, address, asked, parent, answer.description)
        return answer.response()
    claims = minted.claims
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
        limits=carving.limit_lines(claims),
        carved=list(minted.carved) or None,
        caller=caller,
        address=address,
    )
    body = {
        "access_token": minted.token,
        "issued_token_type": asked.issued_token_type,
        "token_type": "Bearer",
        "expires_in": minted.ttl,
        "scope": claims["scope"],
    }
    if LIMITS_CLAIM in claims:  # RFC 9396 §7: the authorization details granted
        body[LIMITS_CLAIM] = claims[LIMITS_CLAIM]
    return JSONResponse(body, headers={"cache-control": "no-store", "pragma": "no-cache"})


def _quietly_refused(broker: Any, address: str, reason: str) -> None:
    """A TCP exchange refused before a token verified: audited once a window per address,
    then counted (``broker.ratelimit.QuietRefusals``), as a TCP request without a credential."""
    with contextlib.suppress(AgentSudoError):  # logged by the audit itself
        broker.quiet.refuse(
            "exchange", address, action="exchange", reason=clipped(reason), address=address
        )


def _refused(
    broker: Any,
    caller: str | None,
    address: str | None,
    asked: ExchangeRequest | None,
    parent: VerifiedClaims | None,
    reason: str,
) -> None:
    """A refused exchange in the broker's audit: what was asked (clipped), never the token."""
    chain: Sequence[str] | None = parent.chain if parent is not None else None
    with contextlib.suppress(AgentSudoError):  # logged by the audit; the refusal stands
        broker.audit.record(
            "broker_refused",
            action="exchange",
            agent=parent.agent if parent is not None else None,
            chain=list(chain) if chain else None,
            asked=clipped(asked.asked()) if asked is not None else None,
            reason=clipped(reason),
            caller=caller,
            address=address,
        )

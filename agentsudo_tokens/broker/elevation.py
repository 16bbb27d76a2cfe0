"""Elevation through the broker: a human approves one call, the broker signs that one call.

    POST /v1/elevations {"token", "scope", "function", "arguments", "reason"?, "timeout"?}
        -> 202 {"id": "apr_...", "expires_at": ...}
    GET /v1/elevations/{id}   (Authorization: Bearer <the same token>)
        -> {"status": "pending" | "denied" | "expired" | "consumed"}
        or {"status": "approved", "elevation_token": "<compact JWS>"}   (once)

The broker verifies the asking token itself (its own keys, not revoked), files
the request in its store in ``approvals``' format with the token's chain (so
``agentsudo approvals`` and ``GET /v1/approvals`` show it whole, and who acts
for whom), and bounds the requests waiting: ``MAX_PENDING`` per chain (an agent
acting for a root agent: a sub-agent named like another agent does not use up
that agent's), and as many for a root agent's sub-agents together (they never
use up their root's own). Only a scope the policy keeps for a human (``ask``)
may be asked for; in dev mode (no policy file) any scope may. A delegated token
asks only for what its root agent may pass on (``ask_refusal``): under a
policy, nothing. An admin answers as for any approval. The first GET after an
approval returns the elevation token, and only that GET: the next says
``consumed``.

The elevation token is a compact JWS signed by the broker's key, header
``{"alg", "kid", "typ": "elevation+jwt"}``, claims::

    iss, aud = "agentsudo-elevation", sub = the agent, iat, nbf, exp (iat + at most 60 s),
    jti (single use), elevated_scope, approver, request_id,
    call_sha256 = SHA-256 of canonical JSON [function, canonical arguments],
    token_jti = the jti of the token that asked

The waiting guard checks all of it against the broker's JWKS and its own
call, and consumes the ``jti`` once in its process (``guard.broker_elevation``).
An access-token verifier refuses it (its ``typ`` and ``aud`` are not an access
token's).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import (
    ConfigError,
    PermissionDeniedError,
    UnknownApprovalError,
)
from ..state.approvals import (
    ANSWER,
    KEEP,
    MAX_ARGUMENTS,
    REQUEST,
    ApprovalRequest,
    binding,
    canonical_arguments,
    canonical_json,
    text_digest,
)

if TYPE_CHECKING:
    from ..config import Settings
    from ..state import Store
    from ..tokens.claims import VerifiedClaims
    from ..tokens.jwks import KeySource
    from ..tokens.keys import SigningKey
    from .devmode import DevPolicy
    from .policy import Policy

__all__ = [
    "ELEVATION_AUDIENCE",
    "ELEVATION_CLAIMS",
    "ELEVATION_TTL",
    "ELEVATION_TYPE",
    "MAX_NESTING",
    "MAX_PENDING",
    "ask_refusal",
    "call_digest",
    "elevation_status",
    "file_elevation",
    "mint_elevation",
    "nesting",
]

ELEVATION_TYPE = "elevation+jwt"
ELEVATION_AUDIENCE = "agentsudo-elevation"
ELEVATION_TTL = 60  # seconds: an elevation token is used at once, or never
MAX_PENDING = 100  # requests waiting per chain, and of a root's sub-agents; more are refused
MAX_TIMEOUT = 3600  # seconds a request may wait for a human
MAX_NESTING = 32  # levels of arrays and objects in a request's arguments (the object is 1)
DEFAULT_TIMEOUT = 300
LEEWAY = 5  # seconds of clock skew allowed on an elevation token's times
_log = logging.getLogger("agentsudo")
ISSUED = "elevation-issued:"  # the request's elevation token was handed out (once)
ELEVATION_CLAIMS = frozenset(
    {
        "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "elevated_scope", "approver",
        "request_id", "call_sha256", "token_jti",
    }
)  # fmt: skip


def call_digest(function: str, arguments_json: str) -> str:
    """SHA-256 (hex) of the call: canonical JSON of ``[function, canonical arguments]``."""
    return text_digest(canonical_json([function, arguments_json]))


# --- the broker's side ------------------------------------------------------------------


class TooManyPendingError(PermissionDeniedError):
    """An agent has ``MAX_PENDING`` requests waiting already (the broker answers 429)."""


def authenticate(token: str, keys: KeySource, store: Store, settings: Settings) -> VerifiedClaims:
    """The claims of a token this broker issued and nobody revoked.

    :raises InvalidTokenError: not such a token (a one-time token cannot ask either).
    :raises StoreUnavailableError: the store cannot be reached.
    """
    from ..tokens.revocation import check_revoked
    from ..tokens.verifier import Verifier

    verifier = Verifier(
        keys,
        issuer=settings.issuer,
        audience=settings.audience,
        leeway=settings.leeway,
        max_ttl=settings.max_ttl,
        cache_size=0,
        store=None,
    )
    claims = verifier.verify(token)
    check_revoked(store, claims)
    return claims


def ask_refusal(
    policy: Policy | DevPolicy, claims: VerifiedClaims, scope: str
) -> PermissionDeniedError | None:
    """Why ``claims`` may not ask a human for ``scope``, or ``None`` if it may.

    A token minted directly may ask for its agent's ``ask`` scopes (in dev mode, any).
    A delegated token asks only for a scope its root agent may pass on (``delegable``):
    delegation narrows what a sub-agent may ask a human for as it narrows what it holds,
    and what a human approved would otherwise reach beyond what the sub-agent could ever
    be given. Under a policy a scope is granted or asked for, never both, so ``delegable``
    holds no ``ask`` scope and a delegated token asks for nothing: its root's own token
    asks. In dev mode everything may be passed on, so it may ask.
    """
    from ..tokens.delegation import scope_outside
    from ..tokens.scopes import ScopeSet
    from .devmode import DevPolicy
    from .exchange import delegation_rules

    agent = claims.agent
    if claims.delegation is not None:
        delegable, _ = delegation_rules(policy, claims.subject)
        if scope_outside(ScopeSet([scope]), delegable) is not None:
            passable = delegable.claim() or "nothing"
            return PermissionDeniedError(
                f"agent {agent!r} holds a delegated token (chain {' > '.join(claims.chain)}): "
                f"it may ask a human only for what {claims.subject!r} may pass on "
                f"({passable}), not {scope!r}",
                agent=agent,
                scope=scope,
                expected=delegable.scopes,
                found=scope,
            )
    if isinstance(policy, DevPolicy) or policy.needs_human(claims.subject, scope):
        return None
    return PermissionDeniedError(
        f"the policy does not let agent {agent!r} ask a human for {scope!r}",
        agent=agent,
        scope=scope,
        expected="an ask scope",
        found="not askable",
    )


def _pending_of(store: Store, chain: tuple[str, ...]) -> tuple[int, int]:
    """Requests waiting of this very chain, and of every sub-agent of its root agent."""
    from ..state.approvals import pending

    same = delegated = 0
    for request in pending(store):
        theirs = request.chain or (request.agent,)
        same += theirs == chain
        delegated += request.delegated and request.root == chain[0]
    return same, delegated


_FILING = threading.Lock()  # the count and the write of one request, one at a time here


def nesting(text: str) -> int:
    """How deep arrays and objects nest in a JSON text (without parsing it, so any depth)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def file_elevation(
    store: Store,
    claims: VerifiedClaims,
    *,
    scope: str,
    function: str,
    arguments: str,
    reason: str | None,
    timeout: int | None,
    may_ask: bool,
    max_pending: int = MAX_PENDING,
) -> ApprovalRequest:
    """File one call's request for a human, as the approvals of the store are.

    :param arguments: the call's canonical arguments (``canonical_arguments``), as text.
    :param may_ask: whether the policy lets this token ask for ``scope`` at all
        (``ask_refusal``).
    :raises PermissionDeniedError: the policy keeps ``scope`` from a human's answer.
    :raises TooManyPendingError: ``max_pending`` requests wait already of this chain (the
        token's agent acting for its root), or of its root's sub-agents together.
    :raises ConfigError: arguments that are not canonical JSON of an object, too large,
        nested deeper than ``MAX_NESTING``, or a bad timeout.
    """
    agent = claims.agent  # a delegated token: the sub-agent acting (tokens.delegation)
    chain = claims.chain  # (root, ..., agent): counted and shown by it, not by the name
    if not may_ask:
        raise PermissionDeniedError(
            f"the policy does not let agent {agent!r} ask a human for {scope!r}",
            agent=agent,
            scope=scope,
            expected="an ask scope",
            found="not askable",
        )
    if len(arguments) > MAX_ARGUMENTS:
        raise ConfigError(f"arguments: at most {MAX_ARGUMENTS} bytes of canonical JSON")
    depth = nesting(arguments)
    if depth > MAX_NESTING:
        raise ConfigError(
            f"arguments: expected at most {MAX_NESTING} levels of nesting, found {depth}"
        )
    try:
        parsed = json.loads(arguments)
        canonical = canonical_arguments(parsed) if isinstance(parsed, dict) else None
    except (ValueError, RecursionError):
        canonical = None
    if canonical != arguments:
        raise ConfigError("arguments: expected the call's arguments as canonical JSON")
    wait = DEFAULT_TIMEOUT if timeout is None else timeout
    if not 1 <= wait <= MAX_TIMEOUT:
        raise ConfigError(f"timeout: expected 1 to {MAX_TIMEOUT} seconds, found {wait}")
    request_id = "apr_" + secrets.token_urlsafe(16)
    digest = text_digest(arguments)
    now = time.time()
    request = ApprovalRequest(
        id=request_id,
        agent=agent,
        jti=claims.jti,
        scope=scope,
        function=function,
        arguments_json=arguments,
        arguments_sha256=digest,
        reason=reason or "not granted",
        created_at=now,
        expires_at=now + wait,
        binding=binding(request_id, agent, claims.jti, scope, function, digest, chain),
        chain=chain,
    )
    with _FILING:
        same, delegated = _pending_of(store, chain)
        if same >= max_pending:
            who = f"agent {agent!r}" + (f" acting for {chain[0]!r}" if len(chain) > 1 else "")
            raise _too_many(f"{who} has", max_pending, agent, scope)
        if len(chain) > 1 and delegated >= max_pending:
            raise _too_many(f"the sub-agents of {chain[0]!r} have", max_pending, agent, scope)
        stored = json.dumps(request.to_dict())
        store.put(REQUEST + request_id, stored, expires_at=request.expires_at + KEEP)
    return request


def _too_many(who: str, max_pending: int, agent: str, scope: str) -> TooManyPendingError:
    return TooManyPendingError(
        f"{who} {max_pending} requests waiting for a human already",
        agent=agent,
        scope=scope,
        expected=f"fewer than {max_pending} waiting",
        found="too many waiting",
    )


def mint_elevation(
    key: SigningKey, request: ApprovalRequest, *, approver: str, issuer: str, now: float
) -> str:
    """The signed one-shot elevation token for ``request``, approved by ``approver``."""
    from ..tokens.jws import encode

    issued = int(now)
    claims = {
        "iss": issuer,
        "aud": ELEVATION_AUDIENCE,
        "sub": request.agent,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ELEVATION_TTL,
        "jti": secrets.token_urlsafe(16),
        "elevated_scope": request.scope,
        "approver": approver,
        "request_id": request.id,
        "call_sha256": call_digest(request.function, request.arguments_json),
        "token_jti": request.jti,
    }
    header = {"alg": key.alg, "kid": key.kid, "typ": ELEVATION_TYPE}
    return encode(header, claims, key)


def elevation_status(
    store: Store,
    claims: VerifiedClaims,
    request_id: str,
    *,
    key: SigningKey,
    issuer: str,
) -> dict[str, Any]:
    """Where the request ``request_id`` of this token stands; an approval's token, once.

    :raises UnknownApprovalError: no such request of this token (unknown, or long gone).
    :raises StoreUnavailableError: the store cannot be reached.
    """
    raw, answer_raw, issued = store.get_many(
        (REQUEST + request_id, ANSWER + request_id, ISSUED + request_id)
    )
    unknown = UnknownApprovalError(f"no elevation request {request_id!r} of this token")
    if raw is None:
        raise unknown
    try:
        data = json.loads(raw)
        owner = (data.get("agent"), data.get("jti")) if isinstance(data, dict) else None
    except ValueError:
        owner = None
    if owner != (claims.agent, claims.jti):
        raise unknown  # another token's request: not even its state is told
    try:
        request: ApprovalRequest | None = ApprovalRequest.from_json(raw)
    except ValueError:
        request = None
    if request is None or request.id != request_id:
        return {"status": "denied", "reason": "the stored request was altered"}
    if issued is not None:
        return {"status": "consumed"}
    if answer_raw is None:
        if request.expires_at <= time.time():
            return {"status": "expired"}
        return {"status": "pending"}
    try:
        answer = json.loads(answer_raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return {"status": "denied", "reason": "no usable answer"}
    by = answer.get("by") if isinstance(answer.get("by"), str) else None
    if answer.get("approved") is not True:
        why = answer.get("reason") if isinstance(answer.get("reason"), str) else None
        return {"status": "denied", "by": by, "reason": why}
    if answer.get("binding") != request.binding:
        return {"status": "denied", "reason": "the approval does not match the stored request"}
    now = time.time()
    if not store.add(ISSUED + request_id, str(int(now)), expires_at=request.expires_at + KEEP):
        return {"status": "consumed"}
    token = mint_elevation(key, request, approver=by or "an admin", issuer=issuer, now=now)
    return {"status": "approved", "elevation_token": token, "approver": by}

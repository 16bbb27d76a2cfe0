"""Elevation through the broker: a human approves one call, the broker signs that one call.

    POST /v1/elevations {"token", "scope", "function", "arguments", "reason"?, "timeout"?}
        -> 202 {"id": "apr_...", "expires_at": ...}
    GET /v1/elevations/{id}   (Authorization: Bearer <the same token>)
        -> {"status": "pending" | "denied" | "expired" | "consumed"}
        or {"status": "approved", "elevation_token": "<compact JWS>"}   (once)

The broker verifies the asking token itself (its own keys, not revoked), files
the request in its store in ``approvals``' format (so ``agentsudo approvals``
and ``GET /v1/approvals`` show it whole), and bounds the requests waiting per
agent. Only a scope the policy keeps for a human (``ask``) may be asked for;
in dev mode (no policy file) any scope may. An admin answers as for any
approval. The first GET after an approval returns the elevation token, and
only that GET: the next says ``consumed``.

The elevation token is a compact JWS signed by the broker's key, header
``{"alg", "kid", "typ": "elevation+jwt"}``, claims::

    iss, aud = "agentsudo-elevation", sub = the agent, iat, nbf, exp (iat + at most 60 s),
    jti (single use), elevated_scope, approver, request_id,
    call_sha256 = SHA-256 of canonical JSON [function, canonical arguments],
    token_jti = the jti of the token that asked

The waiting guard checks all of it with ``verify_elevation`` against the
broker's JWKS and its own call, and consumes the ``jti`` once in this process
(``ElevationWaiting``). An access-token verifier refuses it (its ``typ`` and
``aud`` are not an access token's).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..approvals import (
    ANSWER,
    KEEP,
    MAX_ARGUMENTS,
    REQUEST,
    ApprovalRequest,
    Verdict,
    binding,
    canonical_arguments,
    canonical_json,
    notify_webhook,
    text_digest,
)
from ..errors import (
    AgentSudoError,
    ConfigError,
    InvalidTokenError,
    PermissionDeniedError,
    UnknownApprovalError,
)

if TYPE_CHECKING:
    from ..agent import Agent
    from ..claims import VerifiedClaims
    from ..config import Settings
    from ..jwks import KeySource
    from ..keys import SigningKey
    from ..store import Store
    from .client import BrokerClient

__all__ = [
    "ELEVATION_AUDIENCE",
    "ELEVATION_TTL",
    "ELEVATION_TYPE",
    "MAX_PENDING",
    "ElevationWaiting",
    "call_digest",
    "elevation_status",
    "file_elevation",
    "mint_elevation",
    "verify_elevation",
]

ELEVATION_TYPE = "elevation+jwt"
ELEVATION_AUDIENCE = "agentsudo-elevation"
ELEVATION_TTL = 60  # seconds: an elevation token is used at once, or never
MAX_PENDING = 100  # requests waiting per agent; more are refused
MAX_TIMEOUT = 3600  # seconds a request may wait for a human
DEFAULT_TIMEOUT = 300
LEEWAY = 5  # seconds of clock skew allowed on an elevation token's times
_log = logging.getLogger("agentsudo")
ISSUED = "elevation-issued:"  # the request's elevation token was handed out (once)
_CLAIMS = frozenset(
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
    from ..revocation import check_revoked
    from ..verifier import Verifier

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


def _pending_of(store: Store, agent: str) -> int:
    from ..approvals import pending

    return sum(1 for request in pending(store) if request.agent == agent)


_FILING = threading.Lock()  # the count and the write of one request, one at a time here


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
    :param may_ask: whether the policy lets this agent ask for ``scope`` at all.
    :raises PermissionDeniedError: the policy keeps ``scope`` from a human's answer.
    :raises TooManyPendingError: the agent has ``max_pending`` requests waiting.
    :raises ConfigError: arguments that are not canonical JSON of an object, too large,
        or a bad timeout.
    """
    agent = claims.subject
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
        binding=binding(request_id, agent, claims.jti, scope, function, digest),
    )
    with _FILING:
        if _pending_of(store, agent) >= max_pending:
            raise TooManyPendingError(
                f"agent {agent!r} has {max_pending} requests waiting for a human already",
                agent=agent,
                scope=scope,
                expected=f"fewer than {max_pending} waiting",
                found="too many waiting",
            )
        stored = json.dumps(request.to_dict())
        store.put(REQUEST + request_id, stored, expires_at=request.expires_at + KEEP)
    return request


def mint_elevation(
    key: SigningKey, request: ApprovalRequest, *, approver: str, issuer: str, now: float
) -> str:
    """The signed one-shot elevation token for ``request``, approved by ``approver``."""
    from ..jws import encode

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
    if owner != (claims.subject, claims.jti):
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


# --- the waiting guard's side -----------------------------------------------------------


def _refused(why: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"elevation token refused: {why}", expected="an elevation token for this call", found=why
    )


def verify_elevation(
    token: object,
    keys: KeySource,
    *,
    issuer: str,
    agent: str,
    scope: str,
    request_id: str,
    function: str,
    arguments: str,
    token_jti: str | None,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of an elevation token for exactly this call; refuse anything else.

    Checks the signature (by ``kid``, with the key's own ``alg``), ``typ``, issuer,
    audience, times (``exp - iat`` at most ``ELEVATION_TTL``), agent, scope, request id,
    the call's hash (``function`` and canonical ``arguments``) and the asking token's jti.
    Consumes nothing: ``ElevationWaiting`` keeps the used ``jti``.

    :raises PermissionDeniedError: any mismatch, with a one-line reason.
    """
    from ..jws import decode_json_part, split

    try:
        parts = split(token)
        header = decode_json_part(parts.header, "header")
        payload = decode_json_part(parts.payload, "payload")
    except AgentSudoError:
        raise _refused("malformed") from None
    if set(header) != {"alg", "kid", "typ"} or header.get("typ") != ELEVATION_TYPE:
        raise _refused(f"expected a header with typ {ELEVATION_TYPE!r}")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise _refused("signed by a key the broker does not publish")
    if header.get("alg") != key.alg:
        raise _refused("its alg is not its key's")
    try:
        signed = key.verify(parts.signing_input, parts.signature_bytes())
    except AgentSudoError:
        signed = False
    if not signed:
        raise _refused("bad signature")
    if set(payload) != _CLAIMS:
        raise _refused("unexpected claims")
    times = [payload.get(name) for name in ("iat", "nbf", "exp")]
    if not all(type(value) is int for value in times):
        raise _refused("times are not integers")
    iat, nbf, exp = (int(str(value)) for value in times)
    clock = time.time() if now is None else now
    if exp - iat > ELEVATION_TTL or nbf < iat or exp <= nbf:
        raise _refused(f"it may live at most {ELEVATION_TTL}s")
    if clock >= exp + LEEWAY:
        raise _refused("expired")
    if clock + LEEWAY < nbf:
        raise _refused("not yet valid")
    expected = {
        "iss": issuer,
        "aud": ELEVATION_AUDIENCE,
        "sub": agent,
        "elevated_scope": scope,
        "request_id": request_id,
        "call_sha256": call_digest(function, arguments),
        "token_jti": token_jti,
    }
    for name, value in expected.items():
        if payload.get(name) != value:
            what = {"call_sha256": "function or arguments", "sub": "agent"}.get(name, name)
            raise _refused(f"it is for another {what.replace('_', ' ')}")
    if not isinstance(payload.get("jti"), str) or not payload["jti"]:
        raise _refused("no jti")
    if not isinstance(payload.get("approver"), str):
        raise _refused("no approver")
    return dict(payload)


class _Used:
    """The elevation tokens this process has used: each ``jti`` runs one call, once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, float] = {}  # jti -> until when it is worth remembering

    def consume(self, jti: str, until: float) -> bool:
        """True the first time ``jti`` is seen (kept until ``until``), False after."""
        with self.lock:
            now = time.time()
            if len(self.seen) > 1024:
                self.seen = {j: t for j, t in self.seen.items() if t > now}
            if jti in self.seen:
                return False
            self.seen[jti] = until
            return True

    def renew_lock(self) -> None:
        self.lock = threading.Lock()


USED = _Used()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=USED.renew_lock)


class Call(Protocol):
    """What the guard knows of the call (``decision.ApprovalContext``)."""

    @property
    def function(self) -> str: ...
    @property
    def arguments(self) -> Mapping[str, Any]: ...
    @property
    def reason(self) -> str: ...


class ElevationWaiting:
    """One call's request through the broker: file, poll, settle. Never sleeps; the caller does.

    The same steps as ``elevation._Waiting``: ``refusal`` (a call that cannot be asked),
    ``start``, ``poll`` (``None`` while pending), ``expire`` and ``cancel``.
    """

    def __init__(
        self,
        client: BrokerClient,
        agent: Agent,
        scope: str,
        context: Call,
        *,
        timeout: float,
        issuer: str,
        notify: str | Callable[[ApprovalRequest], object] | None = None,
    ) -> None:
        self.client, self.scope, self.context = client, scope, context
        self.notify = notify
        self.agent, self.jti, self.issuer = agent.name, agent.jti, issuer
        self.timeout = timeout
        self.token: str | None = agent.token
        self.request_id = ""
        self.refusal: Verdict | None = None
        try:
            self.arguments, why = canonical_arguments(context.arguments), None
        except ValueError as exc:
            self.arguments, why = "{}", f"cannot ask a human: {exc}"
        if why is None and len(self.arguments) > MAX_ARGUMENTS:
            why = (
                f"cannot ask a human: the arguments are {len(self.arguments)} bytes of "
                f"canonical JSON, over the {MAX_ARGUMENTS}-byte limit of what is shown whole"
            )
        if why is None and self.token is None:
            why = "cannot ask the broker: this session has no token to show it"
        if why is not None:
            self.refusal = Verdict(False, why, "")

    def start(self) -> None:
        """File the request.

        :raises AgentSudoError: the broker refused it or cannot be reached.
        """
        body = {
            "token": self.token,
            "scope": self.scope,
            "function": self.context.function,
            "arguments": self.arguments,
            "reason": self.context.reason,
            "timeout": max(1, min(MAX_TIMEOUT, int(self.timeout))),
        }
        answer = self.client.request("POST", "/v1/elevations", body)
        request_id = answer.get("id")
        if not isinstance(request_id, str) or not request_id.startswith("apr_"):
            raise InvalidTokenError("the broker answered an elevation request without its id")
        self.request_id = request_id
        if self.notify is not None:
            expires_at = answer.get("expires_at")
            if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
                self._notify(float(expires_at))

    def _notify(self, expires_at: float) -> None:
        """Tell the webhook or the callable what was filed, as ``ask`` does without a broker."""
        digest = text_digest(self.arguments)
        function, request_id = self.context.function, self.request_id
        request = ApprovalRequest(
            id=request_id,
            agent=self.agent,
            jti=self.jti,
            scope=self.scope,
            function=function,
            arguments_json=self.arguments,
            arguments_sha256=digest,
            reason=self.context.reason,
            created_at=time.time(),
            expires_at=expires_at,
            binding=binding(request_id, self.agent, self.jti, self.scope, function, digest),
        )
        try:
            if callable(self.notify):
                self.notify(request)
            elif self.notify is not None:
                notify_webhook(self.notify, request)
        except Exception as exc:  # the request stands; without an answer it times out: denied
            _log.warning(
                "approval request %s: notification failed: %s", request_id, type(exc).__name__
            )

    def _status(self) -> dict[str, Any]:
        from .client import BrokerClient

        asking = BrokerClient(self.client.address, credential=self.token)
        asking.timeout = self.client.timeout
        answer = asking.request("GET", f"/v1/elevations/{self.request_id}")
        return answer if isinstance(answer, dict) else {}

    def poll(self) -> Verdict | None:
        """``None`` while the request waits; else how it ended.

        A broker that cannot be reached for a moment (a restart) is still waited
        for: the request is in its store, and the caller's deadline still ends the
        wait (a refusal), so this fails closed all the same.
        """
        from .client import BrokerUnavailableError

        try:
            answer = self._status()
        except BrokerUnavailableError:
            return None
        status = answer.get("status")
        request_id = self.request_id
        if status == "pending":
            return None
        by = answer.get("by") if isinstance(answer.get("by"), str) else None
        who = f" by {by}" if by else ""
        if status == "approved":
            return self._settle(answer.get("elevation_token"), by)
        if status == "denied":
            why = answer.get("reason") if isinstance(answer.get("reason"), str) else None
            text = f"denied{who} ({why or 'no reason given'}; {request_id})"
            return Verdict(False, text, request_id, by)
        if status == "expired":
            return Verdict(False, f"no answer within {self.timeout:g}s ({request_id})", request_id)
        if status == "consumed":
            return Verdict(False, f"the approval was handed out already ({request_id})", request_id)
        return Verdict(False, f"the broker answered no usable status ({request_id})", request_id)

    def _settle(self, token: object, by: str | None) -> Verdict:
        from ..jwks import KeySet

        request_id = self.request_id
        try:  # again: the arguments may have changed while waiting
            arguments = canonical_arguments(self.context.arguments)
        except ValueError:
            arguments = ""
        try:
            keys = KeySet.from_dict(self.client.jwks())
            claims = verify_elevation(
                token,
                keys,
                issuer=self.issuer,
                agent=self.agent,
                scope=self.scope,
                request_id=request_id,
                function=self.context.function,
                arguments=arguments,
                token_jti=self.jti,
            )
        except AgentSudoError as exc:
            return Verdict(False, f"{exc} ({request_id})", request_id)
        if arguments != self.arguments:
            return Verdict(False, f"the arguments changed while waiting ({request_id})", request_id)
        if not USED.consume(str(claims["jti"]), float(claims["exp"]) + LEEWAY):
            return Verdict(
                False, f"the elevation token was used already ({request_id})", request_id
            )
        approver = str(claims["approver"])
        return Verdict(True, f"approved by {approver} ({request_id})", request_id, approver)

    def expire(self) -> Verdict:
        """The time is up: an answer that came at the last moment stands, else denied."""
        try:
            verdict = self.poll()
        except AgentSudoError:
            verdict = None
        if verdict is not None:
            return verdict
        why = f"no answer within {self.timeout:g}s ({self.request_id})"
        return Verdict(False, why, self.request_id)

    def cancel(self) -> None:
        """The caller gave up: the request expires on its own at the broker."""

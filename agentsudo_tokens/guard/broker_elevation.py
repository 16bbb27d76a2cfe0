"""The guard's side of an elevation through the broker: file the call, wait, check the answer.

    waiting = ElevationWaiting(client, agent, scope, context, timeout=300, issuer=iss)

``guard.elevation.ask`` drives it when ``AGENTSUDO_BROKER`` is set: the broker
files the request, an admin answers, and the elevation token that comes back
is checked here against the broker's JWKS and this very call (``verify_elevation``),
then consumed once in this process. The broker's side is ``broker.elevation``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..broker.elevation import (
    ELEVATION_AUDIENCE,
    ELEVATION_CLAIMS,
    ELEVATION_TTL,
    ELEVATION_TYPE,
    LEEWAY,
    MAX_TIMEOUT,
    call_digest,
)
from ..errors import AgentSudoError, InvalidTokenError, MalformedTokenError, PermissionDeniedError
from ..state.approvals import (
    MAX_ARGUMENTS,
    ApprovalRequest,
    Verdict,
    binding,
    canonical_arguments,
    notify_webhook,
    text_digest,
)

if TYPE_CHECKING:
    from ..broker.client import BrokerClient
    from ..tokens.dpop import DPoPKey
    from ..tokens.jwks import KeySource
    from .agent import Agent

__all__ = ["USED", "ElevationWaiting", "verify_elevation"]

_log = logging.getLogger("agentsudo")


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
    from ..tokens.jws import decode_json_part, split
    from ..tokens.signed import AlgMismatch, SignatureMismatch, UnknownKid, verify_by_kid

    try:
        parts = split(token)
        header = decode_json_part(parts.header, "header")
        payload = decode_json_part(parts.payload, "payload")
    except AgentSudoError:
        raise _refused("malformed") from None
    if set(header) != {"alg", "kid", "typ"} or header.get("typ") != ELEVATION_TYPE:
        raise _refused(f"expected a header with typ {ELEVATION_TYPE!r}")
    try:
        verify_by_kid(parts, header["kid"], header["alg"], keys)
    except UnknownKid:
        raise _refused("signed by a key the broker does not publish") from None
    except AlgMismatch:
        raise _refused("its alg is not its key's") from None
    except (SignatureMismatch, MalformedTokenError):  # a signature not even base64url
        raise _refused("bad signature") from None
    if set(payload) != ELEVATION_CLAIMS:
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
        self.key: DPoPKey | None = None  # a bound token's key: the broker wants proofs of it
        jkt = agent.claims.jkt if agent.claims is not None else None
        if why is None and jkt is not None:
            from .possession import process_key

            try:
                self.key = process_key()
            except AgentSudoError:
                self.key = None
            if self.key is None or self.key.jkt != jkt:
                why = (
                    "cannot ask the broker: this session's token is bound to a key this "
                    "process does not hold"
                )
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
        answer = self.client.request(
            "POST", "/v1/elevations", body, headers=self._proof("POST", "/v1/elevations")
        )
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

    def _proof(self, method: str, path: str) -> dict[str, str] | None:
        """The ``DPoP`` header a bound token's request needs; ``None`` for a plain token."""
        if self.key is None or self.token is None:
            return None
        return {"DPoP": self.key.proof(method, self.client.url_of(path), token=self.token)}

    def _status(self) -> dict[str, Any]:
        from ..broker.client import BrokerClient

        path = f"/v1/elevations/{self.request_id}"
        proof = self._proof("GET", path)
        if proof is None:
            asking = BrokerClient(self.client.address, credential=self.token)
        else:  # a bound token: Authorization: DPoP, and the proof
            asking = BrokerClient(self.client.address)
            proof["Authorization"] = f"DPoP {self.token}"
        asking.timeout = self.client.timeout
        answer = asking.request("GET", path, headers=proof)
        return answer if isinstance(answer, dict) else {}

    def poll(self) -> Verdict | None:
        """``None`` while the request waits; else how it ended.

        A broker that cannot be reached for a moment (a restart) is still waited
        for: the request is in its store, and the caller's deadline still ends the
        wait (a refusal), so this fails closed all the same.
        """
        from ..broker.client import BrokerUnavailableError

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
        from ..tokens.jwks import KeySet

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

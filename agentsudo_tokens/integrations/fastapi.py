"""FastAPI and Starlette: verify the caller's token, require scopes, run ``@sudo`` as the caller.

    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware)     # each request runs in the caller's session

    @app.post("/refunds")
    def refund(body: Refund, agent: Agent = Depends(require_scope("write:refunds"))):
        return issue_refund(body.order_id, body.amount)     # @sudo checks the caller's token

``require_scope(scope)`` is a dependency (a callable class, like ``HTTPBearer``)
that reads ``Authorization: Bearer``, verifies the token and returns the
verified ``Agent``. A missing or refused token is a 401 with
``WWW-Authenticate: Bearer error="invalid_token"``; a token without the scope
is a 403 with ``error="insufficient_scope", scope="..."`` (RFC 6750). No
response lists the scopes the caller holds. When the token carries limits on
the scope (``tokens.limits``), the request's arguments (each read only where
the route declares it: path, query, header, cookie, JSON body or form; see
``request_limits``) must meet them, and its budgets are debited (in the
verifier's store, else the settings'); behind the middleware, an ``@sudo``
call of the handler with the same costs is that request's call and is not
debited again (``guard.prepaid``). Over a limit is a 403 with the same
``insufficient_scope`` challenge and the refusal's one line as ``detail``
(``amount 5000 exceeds the token's limit 100 for write:refunds``); budgets
that cannot be debited (the store is down) a 503. Each decision is an audit event
whose function is the route (``"POST /refunds"``).

``AgentSudoMiddleware`` (pure ASGI, so the session's ``ContextVar`` reaches the
endpoint, sync endpoints in the threadpool included) opens a session for a
request with a valid Bearer token and answers 401 for a refused one. A request
without a Bearer token passes through with no session: ``require_scope`` and
``@sudo`` then refuse it, and public routes still work.

A token bound to a key (``cnf.jkt``, RFC 9449) is accepted only as
``Authorization: DPoP <token>`` with a ``DPoP`` proof for this request signed
by that key (``integrations.dpop``); sent as a Bearer token, without a proof,
with a replayed or wrong one, it is a 401 with a ``DPoP`` challenge
(``invalid_dpop_proof``, ``invalid_token``, or ``use_dpop_nonce`` and a fresh
``DPoP-Nonce`` when the ``ProofVerifier`` demands nonces). A plain token is
unaffected.

A process that uses either serves requests, so its own ``AGENTSUDO_TOKEN``
stops acting by itself (``disable_ambient_agent``): code handling a request,
in a plain thread (``run_in_executor``, ``threading.Thread``) as much as on the
loop, acts as the caller or as nobody. To carry the caller's session into a
thread, use ``propagation.copy_session`` or ``ContextThreadPoolExecutor``.

Verification happens once per request and verifier: a dependency without a
verifier of its own uses the middleware's result; one given its own verifier
checks the token with it as well (both must accept it, and a one-time token is
used once by each of them), and one given its own ``proofs`` checks the DPoP
proof with them too (their nonces, their origin). It runs on the event loop when it is pure CPU
(keys in memory, in a file, or a JWKS URL with nothing to fetch: ~0.15 ms,
~1 µs for a token verified before), and in a worker thread when it may wait (a
JWKS fetch is due, a state store is configured). A verifier that cannot decide
now (a state store out of reach, public keys past their ``max_stale``, keys or
settings that cannot be read) is a 503, with one WARNING on the
``agentsudo.http`` logger saying why. Keys come from ``AGENTSUDO_JWKS`` (or the
key directory) and the audience from ``AGENTSUDO_AUDIENCE`` unless a
``verifier`` is given.
"""

# No ``from __future__ import annotations``: FastAPI reads ``__call__``'s annotations
# at runtime and cannot resolve strings on a callable instance.

import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..audit import events as audit
from ..errors import (
    BadSignatureError,
    ConfigError,
    ExpiredTokenError,
    InvalidTokenError,
    KeysUnavailableError,
    LimitExceededError,
    NotYetValidTokenError,
    PermissionDeniedError,
    RevocationsUnavailableError,
    RevokedTokenError,
    StoreUnavailableError,
    TokenLifetimeError,
    UnknownKeyError,
    WrongAudienceError,
    WrongIssuerError,
)
from ..guard import prepaid
from ..guard.agent import Agent, _policy, disable_ambient_agent, without_agent
from ..guard.budget import debit
from ..state.replay import ReplayCacheNotSharedError
from ..tokens.dpop_proof import ProofVerifier
from ..tokens.jwks import JwksFile, KeySet
from ..tokens.jws import split
from ..tokens.limits import Limits
from ..tokens.scopes import validate_required_scope
from ..tokens.verifier import Verifier, _header
from . import dpop
from .request_limits import AmbiguousArgument, request_arguments

__all__ = ["AgentSudoMiddleware", "RequireScope", "require_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AGENT_KEY = "agentsudo.agent"  # the ASGI scope key where the middleware leaves the verified agent
_VERIFIER_KEY = "agentsudo.verifier"  # and the verifier that accepted it
_log = logging.getLogger("agentsudo.http")

# Fixed, short reasons for the client: never the token, never the scopes it holds.
_REASONS: tuple[tuple[type[InvalidTokenError], str], ...] = (
    (ExpiredTokenError, "the token has expired"),
    (NotYetValidTokenError, "the token is not valid yet"),
    (TokenLifetimeError, "the token lives longer than allowed"),
    (BadSignatureError, "the signature does not verify"),
    (UnknownKeyError, "the token is signed by an unknown key"),
    (WrongAudienceError, "the token is not meant for this service"),
    (WrongIssuerError, "the token is from another issuer"),
    (RevokedTokenError, "the token was revoked"),
)
_NO_TOKEN = "no bearer token"
_SCHEME_DESCRIPTION = "An agentsudo token: `agentsudo issue --agent NAME --scopes ...`"


class _Refused(Exception):
    """A request whose credentials are refused before any scope is considered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: InvalidTokenError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is malformed"


@dataclass(frozen=True)
class _Answer:
    """An error response: status, ``detail`` and the ``WWW-Authenticate`` challenge (RFC 6750)."""

    status: int
    detail: str
    headers: dict[str, str]

    def exception(self) -> HTTPException:
        return HTTPException(self.status, self.detail, self.headers)

    async def send(self, send: Send) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _unauthorized(reason: str) -> _Answer:
    """401: no usable token. ``reason`` is one of our fixed strings (no quotes to escape)."""
    challenge = f'Bearer error="invalid_token", error_description="{reason}"'
    return _Answer(401, f"invalid token: {reason}", {"WWW-Authenticate": challenge})


def _refused(exc: InvalidTokenError, scheme: str, proofs: ProofVerifier | None) -> _Answer:
    """401 for a refused token or proof, with the challenge of the scheme it came with:
    ``Bearer`` (RFC 6750), or ``DPoP`` (RFC 9449 §7.1) for a DPoP request or a binding
    that does not hold."""
    reason = _reason(exc)
    if scheme != "dpop" and not isinstance(exc, dpop.BINDING_ERRORS):
        return _unauthorized(reason)
    nonces = proofs.nonces if proofs is not None else None
    challenge = dpop.dpop_challenge(exc, reason, nonce=nonces.current() if nonces else None)
    return _Answer(401, f"invalid token: {challenge.reason}", challenge.headers)


def _forbidden(scope: str | None, scheme: str = "bearer") -> _Answer:
    """403: a valid token without the scope; a concrete scope has no quotes to escape."""
    challenge = f'{"DPoP" if scheme == "dpop" else "Bearer"} error="insufficient_scope"'
    challenge += ', error_description="the token lacks the required scope"'
    if scope is None:
        return _Answer(403, "insufficient scope", {"WWW-Authenticate": challenge})
    challenge += f', scope="{scope}"'
    detail = f"insufficient scope: this request requires {scope!r}"
    return _Answer(403, detail, {"WWW-Authenticate": challenge})


# Why a token cannot be checked now, most specific first: the 503's detail for the client.
_UNAVAILABLE: tuple[tuple[type[ConfigError], str], ...] = (
    (ReplayCacheNotSharedError, dpop.UNSHARED_REPLAY),
    (StoreUnavailableError, "the state store is unavailable"),
    (KeysUnavailableError, "the public keys are unavailable"),
    (RevocationsUnavailableError, "the revocation list is unavailable"),
    (ConfigError, "the service cannot verify tokens"),  # keys unreadable, a bad setting
)


def _unavailable(exc: ConfigError, what: str) -> _Answer:
    """503: the verifier cannot decide now; fail closed, and log why, once.

    ``what`` names the request (method and path). Our errors never hold a token.
    """
    _log.warning("token not checked for %s: %s", what, exc)
    reason = next(reason for kind, reason in _UNAVAILABLE if isinstance(exc, kind))
    return _Answer(503, f"cannot check the token now: {reason}", {})


def _over_limit(exc: LimitExceededError, scheme: str) -> _Answer:
    """403 for a request over a limit of its token: the refusal's one line, and the scope.

    The challenge's description is fixed (the value may hold any character); the
    detail names the limit and the value, never the caller's other grants.
    """
    challenge = f'{"DPoP" if scheme == "dpop" else "Bearer"} error="insufficient_scope"'
    challenge += ', error_description="the request exceeds a limit of the token"'
    if exc.scope is not None:
        challenge += f', scope="{exc.scope}"'
    return _Answer(403, str(exc), {"WWW-Authenticate": challenge})


def _denied(exc: PermissionDeniedError, scheme: str) -> _Answer:
    """The answer for a ``@sudo`` refusal inside a request: 401 with no session, else 403
    (503 when the budgets' ledger cannot be reached)."""
    if isinstance(exc, LimitExceededError):
        return _over_limit(exc, scheme)
    if exc.found == "ledger unavailable":
        _log.warning("call refused: %s", exc)
        return _Answer(503, "cannot check the token now: the budgets cannot be debited", {})
    if exc.found == "no session":
        return _unauthorized(_NO_TOKEN)
    if exc.found == "expired session":
        return _unauthorized("the token has expired")
    return _forbidden(exc.scope, scheme)


_SCHEMES = ("bearer", "dpop")


def _credentials(headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """The scheme (``bearer`` or ``dpop``) and token of a request; ``None`` when it has none.

    :raises _Refused: several Authorization headers, or a scheme of ours with no token.
    """
    found = [value for name, value in headers if name.lower() == b"authorization"]
    if not found:
        return None
    if len(found) > 1:
        raise _Refused("more than one Authorization header")
    scheme, _, credentials = found[0].decode("latin-1").strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        return None  # another scheme: not ours to judge
    token = credentials.strip()
    if not token:
        raise _Refused(_NO_TOKEN)
    return scheme, token


def _scheme(scope: Scope) -> str:
    """The request's Authorization scheme, for the challenge of a 403."""
    try:
        found = _credentials(scope.get("headers", []))
    except _Refused:
        return "bearer"
    return found[0] if found else "bearer"


def _kid(token: str) -> str | None:
    """The ``kid`` in a token's header, unverified; ``None`` when it cannot be read."""
    try:  # the verifier's own header check, memoized per encoded header
        return _header(split(token).header)[0]
    except Exception:  # the verifier will say what is wrong with it
        return None


_LOCAL_KEYS = (KeySet, JwksFile)  # key sources that never wait on a network


def _may_block(verifier: Verifier, token: str) -> bool:
    """True when verifying ``token`` may wait on a disk or a network, not only on the CPU.

    A state store (revocation, one-time tokens: SQLite or Redis) may, unless the
    verifier can answer from its cache (``needs_store``). Keys in memory or in a
    file never do. A JWKS URL does when a fetch is due for this ``kid`` (it says
    so: ``needs_fetch``); an unknown key source may.
    """
    if verifier.needs_store(token):
        return True
    keys = verifier.keys
    if type(keys) in _LOCAL_KEYS or isinstance(keys, KeySet | JwksFile):
        return False
    needs_fetch = getattr(keys, "needs_fetch", None)
    if not callable(needs_fetch):
        return True
    kid = _kid(token)
    return kid is None or bool(needs_fetch(kid))


class _Verification:
    """Turns a token into a verified ``Agent``: on the loop when that is pure CPU, else in a thread.

    Verifying is CPU work (~0.15 ms; ~1 µs for a token verified before), which a
    thread would not make cheaper (the GIL) and a thread hop would make dearer.
    Waiting on a disk or a network (a JWKS fetch, a state store) is moved off the
    event loop.
    """

    def __init__(
        self,
        verifier: Verifier | None,
        in_thread: bool | None,
        proofs: ProofVerifier | None = None,
    ) -> None:
        self.given = verifier  # None: the process's default verifier
        self._verifier = verifier
        self._in_thread = in_thread
        self._proofs = proofs  # None: the verifier's default (integrations.dpop)
        self.own_proofs = proofs is not None
        self._origin: tuple[str | None] | None = None  # resolved at the first DPoP request
        self._lock = threading.Lock()

    def verifier(self) -> Verifier:
        """The verifier given, else the process's default one, resolved once.

        :raises ConfigError: no public keys to verify with.
        """
        if self._verifier is None:
            with self._lock:
                if self._verifier is None:
                    self._verifier = _policy.default_verifier()
        return self._verifier

    def accepts_from(self, scope: Scope) -> Agent | None:
        """The agent the middleware verified for this request, when its verdict is ours too.

        A dependency without a verifier of its own takes it; one given its own
        verifier, only when the middleware used that very verifier.
        """
        agent = scope.get(AGENT_KEY)
        if not isinstance(agent, Agent):
            return None
        if self.given is None or scope.get(_VERIFIER_KEY) is self.given:
            return agent
        return None

    def proofs(self) -> ProofVerifier:
        """The DPoP proof verifier given, else the verifier's default one."""
        if self._proofs is None:
            self._proofs = dpop.default_proofs(self.verifier())
        return self._proofs

    def _possession(self, token: str, scheme: str, scope: Scope, agent: Agent) -> Agent:
        claims = agent.claims
        if claims is not None and (claims.jkt is not None or scheme != "bearer"):
            proofs = self.proofs()
            if self._origin is None:
                self._origin = (dpop.service_origin(proofs),)
            dpop.check_possession(proofs, scope, scheme, token, claims, self._origin[0])
        return agent

    def _agent(self, token: str, scheme: str, scope: Scope) -> Agent:
        agent = Agent.from_token(token, verifier=self.verifier())
        return self._possession(token, scheme, scope, agent)

    def _in_thread_for(self, token: str, scheme: str) -> bool:
        in_thread = self._in_thread
        if in_thread is None:
            verifier = self._verifier  # resolving the default reads files: in the thread
            in_thread = (
                verifier is None
                or _may_block(verifier, token)
                or (scheme == "dpop" and dpop.may_block(self.proofs()))
            )
        return in_thread

    async def possession(self, token: str, scheme: str, scope: Scope, agent: Agent) -> Agent:
        """``agent`` (verified by the middleware), once this verification's own DPoP proof
        verifier has checked the request too (its nonces, its origin).

        :raises InvalidTokenError: as ``agent``.
        :raises ConfigError: as ``agent``.
        """
        claims = agent.claims
        if claims is None or (claims.jkt is None and scheme == "bearer"):
            return agent
        in_thread = self._in_thread
        if in_thread is None:
            in_thread = dpop.may_block(self.proofs())
        if in_thread:
            return await anyio.to_thread.run_sync(self._possession, token, scheme, scope, agent)
        return self._possession(token, scheme, scope, agent)

    async def agent(self, token: str, scheme: str, scope: Scope) -> Agent:
        """The verified agent of ``token``, its binding to a key checked (DPoP).

        :raises InvalidTokenError: the token is refused, or its DPoP proof
            (``InvalidDPoPProofError``, ``TokenBindingError``).
        :raises ConfigError: the verifier cannot decide now (``StoreUnavailableError``,
            ``KeysUnavailableError``), or has no public keys to verify with.
        """
        if self._in_thread_for(token, scheme):
            return await anyio.to_thread.run_sync(self._agent, token, scheme, scope)
        return self._agent(token, scheme, scope)


def _what(request: Request) -> str:
    """The guarded thing for the audit trail: method and route template, else the path."""
    scope = request.scope  # not request.url: building a URL costs more than the whole check
    path = getattr(scope.get("route"), "path", None) or scope.get("path", "")
    return f"{scope.get('method', '')} {path}"


class RequireScope(SecurityBase):
    """A FastAPI dependency: the caller's token must be valid and allow ``scope``.

    Returns the verified ``Agent``. Use through ``require_scope``. Appears in
    the OpenAPI schema as an HTTP Bearer scheme.

    :param scope: a concrete scope, checked now (like ``@sudo``).
    :param verifier: default: the middleware's verdict when there is one, else
        ``AGENTSUDO_JWKS`` (or the key directory) and ``AGENTSUDO_AUDIENCE``,
        read at the first request. A verifier given here always checks the
        token itself, behind the middleware too.
    :param in_thread: ``True``/``False``: always/never verify in a worker thread;
        default: only when verifying may wait (a JWKS fetch, a state store).
    :param proofs: checks DPoP proofs for tokens bound to a key; default one per
        verifier (``integrations.dpop.default_proofs``).
    :raises InvalidScopeError: ``scope`` is not a valid concrete scope.
    """

    def __init__(
        self,
        scope: str,
        *,
        verifier: Verifier | None = None,
        in_thread: bool | None = None,
        proofs: ProofVerifier | None = None,
        scheme_name: str | None = None,
    ) -> None:
        self.scope = validate_required_scope(scope)
        self.__agentsudo_scope__ = self.scope  # read by agentsudo_tokens.integrations.scopemap
        self.model = HTTPBearerModel(bearerFormat="JWT", description=_SCHEME_DESCRIPTION)
        self.scheme_name = scheme_name or "AgentSudoBearer"
        self._verification = _Verification(verifier, in_thread, proofs)
        disable_ambient_agent()  # a process with routes to guard serves requests

    def __repr__(self) -> str:
        return f"RequireScope({self.scope!r})"

    async def __call__(self, request: Request) -> Agent:
        disable_ambient_agent()
        agent = self._verification.accepts_from(request.scope)
        if agent is None or self._verification.own_proofs:
            agent = await self._authenticate(request, agent)
        allowed = agent.scopes.allows(self.scope)  # the token's compiled grants decide
        if not allowed:
            audit.record("denied", agent, self.scope, _what(request), "not granted")
            raise _forbidden(self.scope, _scheme(request.scope)).exception()
        limits = agent.claims.limits if agent.claims is not None else None
        if limits is not None and limits.for_scope(self.scope):
            await self._within_limits(request, agent, limits)
        audit.record("allowed", agent, self.scope, _what(request))
        return agent

    async def _within_limits(self, request: Request, agent: Agent, limits: Limits) -> None:
        """Check the request's arguments against the token's limits; debit its budgets.

        :raises HTTPException: 403 over a limit, 503 when the budgets cannot be debited.
        """
        scope, what = self.scope, _what(request)
        try:
            try:
                arguments = await request_arguments(request, limits.arguments(scope))
            except AmbiguousArgument as exc:
                raise LimitExceededError(
                    f"{exc} for {scope}", argument=exc.name, limit="one value", scope=scope
                ) from None
            limits.check(scope, arguments, agent=agent.name)
            costs = limits.costs(scope, arguments, agent=agent.name)
            if costs:
                debit_it = functools.partial(debit, limits=limits, arguments=arguments)
                await anyio.to_thread.run_sync(debit_it, agent, scope, costs)
                if agent.jti is not None:  # the handler's @sudo call with these costs is this one
                    prepaid.paid(agent.jti, scope, costs)
        except LimitExceededError as exc:
            audit.record("denied", agent, scope, what, str(exc))
            raise _over_limit(exc, _scheme(request.scope)).exception() from None
        except PermissionDeniedError as exc:  # the ledger cannot be reached: fail closed
            audit.record("denied", agent, scope, what, str(exc))
            raise _denied(exc, _scheme(request.scope)).exception() from None

    async def _authenticate(self, request: Request, agent: Agent | None) -> Agent:
        """The request's agent: ``agent`` (the middleware's) once this dependency's own
        proof verifier has checked its DPoP proof, else verified here."""
        scheme = "bearer"
        try:
            found = _credentials(request.scope["headers"])
            if found is None:
                raise _Refused(_NO_TOKEN)
            scheme, token = found
            verification = self._verification
            if agent is not None:
                return await verification.possession(token, scheme, request.scope, agent)
            return await verification.agent(token, scheme, request.scope)
        except _Refused as refused:
            answer = _unauthorized(refused.reason)
        except InvalidTokenError as exc:
            _log.info("token refused for %s: %s", _what(request), exc)
            answer = _refused(exc, scheme, self._verification.proofs())
        except ConfigError as exc:  # the store, the keys or a setting: cannot decide now
            raise _unavailable(exc, _what(request)).exception() from None
        raise answer.exception()


def require_scope(
    scope: str,
    *,
    verifier: Verifier | None = None,
    in_thread: bool | None = None,
    proofs: ProofVerifier | None = None,
) -> RequireScope:
    """A dependency requiring ``scope``: ``agent: Agent = Depends(require_scope("write:refunds"))``.

    401 for a missing or refused token (or DPoP proof), 403 for a token without ``scope``.

    :raises InvalidScopeError: ``scope`` is not a valid concrete scope.
    """
    return RequireScope(scope, verifier=verifier, in_thread=in_thread, proofs=proofs)


class AgentSudoMiddleware:
    """Pure ASGI middleware: each request with a valid Bearer token runs in its agent's session.

    A refused token is answered with 401 here (a WebSocket is closed with code
    1008). A request without a Bearer token passes through with no agent at
    all: not even a session open around the server (``without_agent``); the
    service's own ``AGENTSUDO_TOKEN`` is off in the whole process once the
    middleware is built (``disable_ambient_agent``), so ``@sudo`` refuses in
    every thread. The verified agent is left in ``scope["agentsudo.agent"]``
    for ``require_scope``. A ``@sudo`` refusal the app leaves unhandled becomes
    a 403 (401 without a token) when no response has started.

    :param verifier: as for ``RequireScope``.
    :param in_thread: as for ``RequireScope``.
    :param proofs: as for ``RequireScope``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier | None = None,
        in_thread: bool | None = None,
        proofs: ProofVerifier | None = None,
    ) -> None:
        self.app = app
        self._verification = _Verification(verifier, in_thread, proofs)
        disable_ambient_agent()  # built when the app first runs, before any request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        disable_ambient_agent()
        scheme = "bearer"
        try:
            found = _credentials(scope["headers"])
            agent = None
            if found is not None:
                scheme, token = found
                agent = await self._verification.agent(token, scheme, scope)
        except _Refused as refused:
            await self._refuse(scope, send, _unauthorized(refused.reason))
            return
        except InvalidTokenError as exc:
            _log.info("token refused for %s %s: %s", scope.get("method"), scope.get("path"), exc)
            await self._refuse(scope, send, _refused(exc, scheme, self._verification.proofs()))
            return
        except ConfigError as exc:  # the store, the keys or a setting: cannot decide now
            what = f"{scope.get('method', 'WEBSOCKET')} {scope.get('path')}"
            await self._refuse(scope, send, _unavailable(exc, what))
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            if agent is None:  # no token: no agent, and never the service's own ambient one
                with without_agent():
                    await self.app(scope, receive, watch)
                return
            scope[AGENT_KEY] = agent
            scope[_VERIFIER_KEY] = self._verification.verifier()
            with agent.start_session(), prepaid.request_debits():
                await self.app(scope, receive, watch)
        except PermissionDeniedError as denied:  # a @sudo refusal the app left unhandled
            if started:
                raise
            await self._refuse(scope, send, _denied(denied, scheme))

    @staticmethod
    async def _refuse(scope: Scope, send: Send, answer: _Answer) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": answer.detail})
            return
        await answer.send(send)

"""The broker's HTTP API: a composed Starlette app, opened in its lifespan.

    app = create_app(BrokerConfig(keys_dir=Path("/var/lib/agentsudo/keys"),
                                  policy_path=Path("/etc/agentsudo/agentsudo.toml")))
    # served by broker.server on a Unix socket (and TCP when asked)

Who calls is decided once per request (``caller_of``): on the Unix socket the
kernel's peer credentials, over TCP a credential token this broker issued
(audience ``agentsudo-broker``), never a name the caller merely claims. What a
caller gets is decided by the policy. Bodies are JSON objects of at most
``max_body`` bytes with only the documented fields; every error is an RFC 9457
problem, never a stack trace.

Each caller's issuance, elevation filing and refused admin requests are rate
limited (``issue_rate`` a second after ``issue_burst`` at once, per caller and
per kind: ``broker.ratelimit``); beyond, a 429 with ``Retry-After``. Refusals
that could come at line rate (no valid credential over TCP, over the limit)
are audited once per caller or address in a window, then counted into one
summary line (``refusals``, ``seconds``) when the window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import math
import os
import pwd
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..errors import AgentSudoError, ConfigError
from ..state import Store, open_store
from ..state import default_store_url as _default_store_url
from ..state.replay import StoreReplayCache
from ..tokens.claims import MAX_AUDIENCES, MAX_NAME
from ..tokens.dpop_proof import ProofVerifier
from ..tokens.issuer import Issuer
from ..tokens.jws import MAX_TOKEN_BYTES
from ..tokens.keydir import KeyDirectory
from ..tokens.limits import LIMITS_CLAIM, Limits
from ..tokens.revocation import agent_cutoff, iso_time
from ..tokens.scopes import MAX_SCOPE_LENGTH, MAX_SCOPES
from ..tokens.verifier import Verifier
from .audit import AUDIT_FILE, GAP, BrokerAudit, clipped, principal
from .audit_anchor import AuditAnchor
from .binding import requested_binding, require_possession
from .bodies import json_body as _json_body
from .bodies import model_of as _model
from .budget_api import BUDGETS_PATH, SPEND_PATH, balances_endpoint, spend_endpoint
from .console import ConsoleState, console_routes
from .console.minted import MintedWriter
from .devmode import DevPolicy
from .exchange import EXCHANGE_PATH, exchange_endpoint
from .notify import Notifier
from .peer import HEADER_TIMEOUT, PEER_CONNECTIONS, TCP_CONNECTIONS, _peer_key, peer_of
from .policy import Caller, Policy, load_policy
from .problems import Problem, TooMany, problem_for, problem_response
from .ratelimit import ISSUE_BURST, ISSUE_RATE, MAX_BURST, MAX_RATE, QuietRefusals, RateLimiter
from .slack import SLACK_PATH, SlackApprovals, interactions_endpoint

if TYPE_CHECKING:
    from ..state.approvals import ApprovalRequest

__all__ = ["BROKER_AUDIENCE", "BrokerConfig", "create_app"]

BROKER_AUDIENCE = "agentsudo-broker"  # the audience of credentials for the broker itself
LIST_CACHE = 1.0  # seconds a built revocation list is served again (unless we revoked since)
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0
_log = logging.getLogger("agentsudo.broker")


@dataclass(frozen=True)
class BrokerConfig:
    """What the broker opens at start-up."""

    keys_dir: Path
    policy_path: Path | None  # None: dev mode (DevPolicy), this user and any agent
    store_url: str | None = None  # default: the SQLite file in the key directory
    settings: Settings = field(default_factory=Settings)
    max_body: int = MAX_BODY
    body_timeout: float = BODY_TIMEOUT
    header_timeout: float = HEADER_TIMEOUT  # for a request head; then the connection is closed
    peer_connections: int = PEER_CONNECTIONS  # at once, per uid (socket) or address (TCP)
    tcp_connections: int = TCP_CONNECTIONS  # at once, all TCP callers together
    issue_rate: float = ISSUE_RATE  # requests a second per caller: issuance, elevation filing
    issue_burst: int = ISSUE_BURST  # requests at once per caller, before the rate applies
    audit_log: Path | None = None  # default: broker-audit.jsonl in the key directory
    public_url: str | None = None  # the console's origin behind a TLS proxy (--public-url)


class _Broker:
    """What the handlers share: keys, issuer, store, policy (replaced on reload)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.keys = KeyDirectory(config.keys_dir)
        settings = config.settings.replace(keys_dir=config.keys_dir)
        self.settings = settings
        self._keys_seen = self._key_files()
        self._keys_checked = time.monotonic()
        self.issuer = Issuer.from_settings(settings)
        self.policy: Policy | DevPolicy = self._load_policy()
        url = config.store_url or _default_store_url(settings.replace(jwks=None))
        self.store: Store = open_store(url)
        self.credentials = self._credential_verifier()
        self.exchange_verifier: Verifier | None = None  # made on first use (broker.exchange)
        self._revocation_list: tuple[float, int, str] | None = None  # (built at, changes, list)
        self.proofs = ProofVerifier(replay=StoreReplayCache(self.store))  # DPoP at issuance
        audit_log = config.audit_log or config.keys_dir / AUDIT_FILE
        self.anchor = AuditAnchor(self.store, audit_log)  # the last signed head, kept aside
        self.audit = BrokerAudit(
            audit_log, self.issuer.key, issuer=settings.issuer, on_head=self.anchor.keep
        )
        self.notifier = Notifier(on_failure=self._notify_failed)
        self.slack = SlackApprovals(self.audit)  # [slack]: Block Kit messages, their clicks
        self.limits = RateLimiter(config.issue_rate, config.issue_burst)
        # budget debits come with guarded calls: a bucket of their own, twenty times as big
        self.spend_limits = RateLimiter(
            min(MAX_RATE, config.issue_rate * 20), min(MAX_BURST, config.issue_burst * 4)
        )
        self.quiet = QuietRefusals(self.audit)  # refusals that may come at line rate
        # the web console's feed and chain state, and its public origin (ConfigError: bad)
        self.console = ConsoleState(audit_log, config.public_url)
        self.minted = MintedWriter(self.store)

    def _credential_verifier(self) -> Verifier:
        """Broker credentials: our own tokens, revocable like any (checked against our store)."""
        return Verifier(
            self.keys.public_keys(),
            issuer=self.settings.issuer,
            audience=BROKER_AUDIENCE,
            leeway=self.settings.leeway,
            max_ttl=self.settings.max_ttl,
            store=self.store,
        )

    def _key_files(self) -> tuple[tuple[int, int, int], ...]:
        """What ``keys rotate``, ``activate`` and ``retire`` change: the key directory's files."""
        seen = []
        for name in ("keys.json", "jwks.json"):
            try:
                info = os.stat(self.config.keys_dir / name)
            except OSError:
                seen.append((0, 0, 0))
            else:
                seen.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(seen)

    def follow_keys(self) -> None:
        """At most once a second: after ``agentsudo keys rotate``/``activate``/``retire``, sign
        with the active key and trust the published ones, without a restart (a broker that kept
        its first key went on minting tokens no verifier trusted once that key was retired)."""
        now = time.monotonic()
        if now - self._keys_checked < 1.0:
            return
        self._keys_checked = now
        seen = self._key_files()
        if seen == self._keys_seen:
            return
        try:
            issuer = Issuer.from_settings(self.settings)
            credentials = self._credential_verifier()
        except AgentSudoError as exc:  # caught mid-change: the next look settles it
            _log.warning("the key directory changed and cannot be read yet: %s", exc)
            return
        self._keys_seen = seen
        if issuer.key.kid != self.issuer.key.kid:
            _log.warning("signing with key %s from now on", issuer.key.kid)
            self.audit.use_key(issuer.key)
            with contextlib.suppress(AgentSudoError):  # logged by the audit itself
                self.audit.record("key_changed", kid=issuer.key.kid, was=self.issuer.key.kid)
        self.issuer, self.credentials = issuer, credentials
        self.exchange_verifier = None  # made anew with the keys published now
        self._revocation_list = None  # signed anew, with the key that signs now

    def _notify_failed(self, request: ApprovalRequest, why: str) -> None:
        """The policy's webhook was not told of ``request`` (it still waits for an admin)."""
        with contextlib.suppress(AgentSudoError):  # logged by the audit itself
            self.audit.elevation(
                "elevation_notify_failed", None, request.id, agent=request.agent, reason=why
            )

    def _load_policy(self) -> Policy | DevPolicy:
        settings = self.config.settings
        if self.config.policy_path is None:
            return DevPolicy(os.geteuid(), settings.max_ttl, settings.ttl, settings.audience)
        return load_policy(
            self.config.policy_path, max_ttl=settings.max_ttl, audience=settings.audience
        )

    def check_audit(self) -> bool:
        """The file against the head kept in the store: a log shorter than it, or not the
        same, gets an ``audit_gap`` line. Until this has been done, no head replaces the
        kept one. ``False``: the store could not be read; try again later.
        """
        try:
            kept = self.anchor.latest()
            keys = self.keys.public_keys()
            gap = None if kept is None else self.anchor.check_against(self.audit.path, keys, kept)
        except AgentSudoError as exc:
            _log.error("the audit log could not be checked against its kept head: %s", exc)
            return False
        if gap is not None:
            _log.error(
                "the audit log was cut or replaced while the broker was away: %s", gap.problem
            )
            self.audit.record(
                GAP,
                expected_lines=gap.expected_lines,
                found_lines=gap.found_lines,
                problem=gap.problem,
            )
        elif kept is None and self.audit.path.stat().st_size > 0:
            _log.warning(
                "the audit log has no head kept in the store (a new store, host or path): "
                "a cut before now cannot be seen"
            )
            self.audit.record("audit_unanchored", problem="no head kept for this log")
        self.anchor.ready = True
        return True

    def reload(self) -> None:
        """Read the policy again; a bad one is refused and the old one stays."""
        try:
            self.policy = self._load_policy()
        except ConfigError as exc:
            _log.error("policy reload refused, the previous policy stays: %s", exc)
            self.audit.reloaded(self.config.policy_path, str(exc))
            return
        _log.warning("policy reloaded from %s", self.config.policy_path)
        self.audit.reloaded(self.config.policy_path)

    def close(self) -> None:
        self.notifier.close()
        self.slack.close()
        self.minted.close()  # before the store: what is queued is written
        self.store.close()
        self.audit.close()


def _groups_of(uid: int, gid: int) -> frozenset[int]:
    """The primary and supplementary groups of ``uid``, from the system's user database."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return frozenset({gid})
    try:
        return frozenset(os.getgrouplist(name, gid))
    except OSError:
        return frozenset({gid})


def caller_of(request: Request, broker: _Broker) -> Caller:
    """Who is calling: the socket's peer, or the holder of a broker-issued credential.

    :raises Problem: 401 over TCP without a valid credential.
    """
    peer = peer_of(request.scope)
    if peer is not None:
        return Caller(uid=peer.uid, gids=_groups_of(peer.uid, peer.gid), credential=None)
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        _unauthenticated(request, broker, "no credential")
        raise Problem(401, "unauthenticated", "over TCP, present a credential this broker issued")
    try:
        claims = broker.credentials.verify(credential.strip())
    except AgentSudoError as exc:
        _unauthenticated(request, broker, f"credential: {exc}")
        raise Problem(401, "unauthenticated", f"credential refused: {exc}") from None
    if claims.jkt is not None:  # its proofs are not checked here: never accepted as a bearer
        _unauthenticated(request, broker, "credential bound to a key")
        raise Problem(401, "unauthenticated", "credential refused: it is bound to a key (DPoP)")
    return Caller(uid=None, gids=frozenset(), credential=claims.subject)


def _unauthenticated(request: Request, broker: _Broker, reason: str) -> None:
    """Audit a TCP request without a valid credential, quietly, by its address."""
    client = request.client
    address = _peer_key(None, (client.host, client.port) if client else None) or "unknown"
    action = f"{request.method} {request.url.path}"
    broker.quiet.refuse("unauthenticated", address, action=action, reason=reason, address=address)


def _limit(
    broker: _Broker, action: str, who: str, *, caller: str | None = None, agent: str | None = None
) -> None:
    """Take one request of ``who``'s ``action`` from its bucket.

    :raises TooMany: none left (the refusal audited quietly).
    """
    wait = broker.limits.take((action, who))
    if wait <= 0:
        return
    limits = broker.limits
    rule = f"at most {limits.burst} at once, then {limits.rate:g} a second"
    reason = f"over the rate limit: {rule}"
    kind = f"over the rate limit of {action}"
    if broker.quiet.refuse(kind, who, action=action, reason=reason, caller=caller, agent=agent):
        _log.warning("%s is over the rate limit of %s (%s)", who, action, rule)
    seconds = max(1, math.ceil(wait))
    raise TooMany(
        f"{who} is over the rate limit of {action} ({rule}); retry in {seconds} s", seconds
    )


def _describe(caller: Caller) -> str:
    if caller.uid is not None:
        try:
            return f"uid {caller.uid} ({pwd.getpwuid(caller.uid).pw_name})"
        except KeyError:
            return f"uid {caller.uid}"
    return f"credential {caller.credential!r}"


class _TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    agent: str = Field(max_length=MAX_NAME)
    scopes: list[Annotated[str, Field(max_length=MAX_SCOPE_LENGTH)]] | None = Field(
        default=None, max_length=MAX_SCOPES
    )
    ttl: int | None = None
    audience: (
        Annotated[str, Field(max_length=MAX_NAME)]
        | list[Annotated[str, Field(max_length=MAX_NAME)]]
        | None
    ) = Field(default=None)
    once: bool = False
    # narrower limits and budgets, as --limit and --budget write them: added to the policy's
    limits: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=32)
    budgets: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=32
    )

    def asked_limits(self) -> Limits | None:
        """The limits asked for, parsed (``InvalidLimitError``: outside the grammar)."""
        if not self.limits and not self.budgets:
            return None
        return Limits.parse(self.limits or (), budgets=self.budgets or ())

    @field_validator("audience")
    @classmethod
    def _few_audiences(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_AUDIENCES:
            raise ValueError(f"at most {MAX_AUDIENCES} audiences")
        return value


class _RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    jti: str | None = Field(default=None, max_length=MAX_NAME)
    token: str | None = Field(default=None, max_length=MAX_TOKEN_BYTES)
    agent: str | None = Field(default=None, max_length=MAX_NAME)
    reason: str | None = Field(default=None, max_length=1000)


Handler = Callable[[Request, _Broker], Awaitable[Response]]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler with the broker at hand and every error answered as a problem."""

    async def endpoint(request: Request) -> Response:
        broker: _Broker = request.app.state.broker
        try:
            broker.follow_keys()
            return await handler(request, broker)
        except Exception as exc:  # every error is a problem; a surprise says nothing more
            problem = problem_for(exc)
            if problem.status >= 500 and not isinstance(exc, AgentSudoError | Problem):
                _log.exception("%s %s failed", request.method, request.url.path)
            if isinstance(problem, TooMany):
                return problem_response(problem, {"retry-after": str(problem.retry_after)})
            return problem_response(problem)

    return endpoint


async def _healthz(request: Request, broker: _Broker) -> Response:
    return JSONResponse({"status": "ok"})


async def _jwks(request: Request, broker: _Broker) -> Response:
    return JSONResponse(broker.keys.public_keys().to_dict())


async def _issue(request: Request, broker: _Broker) -> Response:
    caller = caller_of(request, broker)
    who = str(principal(caller))
    _limit(broker, "issue", who, caller=who)  # refusals by the policy too: each one is audited
    asked = _model(_TokenRequest, await _json_body(request, broker))
    jkt = await requested_binding(request, broker.proofs)  # a DPoP proof: bind to its key
    try:
        grant = broker.policy.grant(
            caller,
            asked.agent,
            scopes=asked.scopes,
            ttl=asked.ttl,
            audience=asked.audience,
            limits=asked.asked_limits(),
        )
    except AgentSudoError as exc:
        why = clipped(str(exc))  # the log, as the audit, keeps a caller's words short
        _log.warning("refused a token for %r to %s: %s", asked.agent, _describe(caller), why)
        broker.audit.refused(caller, "issue", str(exc), asked=asked.model_dump(exclude_none=True))
        raise
    cutoff = await asyncio.to_thread(agent_cutoff, broker.store, grant.agent)
    if cutoff is not None and cutoff >= time.time():  # a kill switch: no token born revoked
        until = "further notice" if cutoff == float("inf") else iso_time(cutoff)
        reason = f"every token of agent {grant.agent!r} is revoked until {until}"
        broker.audit.refused(caller, "issue", reason, asked=asked.model_dump(exclude_none=True))
        raise Problem(403, "forbidden", reason)
    audience = grant.audience if isinstance(grant.audience, str) else list(grant.audience)
    minted = await asyncio.to_thread(
        broker.issuer.issue,
        grant.agent,
        list(grant.scopes),
        ttl=grant.ttl,
        audience=audience,
        once=asked.once,
        jkt=jkt,
        limits=grant.limits,
    )
    if asked.once:
        from ..state.onetime import mark_one_time

        await asyncio.to_thread(mark_one_time, broker.store, minted.claims)
    broker.minted.submit(minted.claims)  # the console's list, written off the request path
    _log.info("issued %s to %s: jti %s", grant.agent, _describe(caller), minted.claims["jti"])
    broker.audit.issued(caller, grant, minted.claims, once=asked.once)  # before it is handed out
    body = {
        "token": minted.token,
        "jti": minted.claims["jti"],
        "agent": grant.agent,
        "scopes": list(grant.scopes),
        "expires_at": minted.claims["exp"],
        "token_type": "Bearer" if jkt is None else "DPoP",
    }
    if LIMITS_CLAIM in minted.claims:  # RFC 9396 §7: the authorization details granted
        body[LIMITS_CLAIM] = minted.claims[LIMITS_CLAIM]
    return JSONResponse(body, status_code=201, headers={"cache-control": "no-store"})


def _admin(request: Request, broker: _Broker) -> Caller:
    caller = caller_of(request, broker)
    if not broker.policy.is_admin(caller):
        who = str(principal(caller))
        _limit(broker, "admin", who, caller=who)  # a refusal audited, so no faster than this
        reason = f"{_describe(caller)} is not an admin of this broker"
        broker.audit.refused(caller, f"{request.method} {request.url.path}", reason)
        raise Problem(403, "forbidden", reason)
    return caller


async def _audit_head(request: Request, broker: _Broker) -> Response:
    """A head signed now over the broker's audit (admins: ``audit verify --broker``)."""
    _admin(request, broker)
    await asyncio.to_thread(broker.audit.seal_if_unsigned)  # so it covers every event so far
    head = await asyncio.to_thread(broker.anchor.latest)
    return JSONResponse({"head": head or broker.audit.latest_head})


async def _revocation_list(request: Request, broker: _Broker) -> Response:
    """The signed revocation list: public, like the JWKS (it names only jtis and agents)."""
    from ..tokens.revocation_list import build_revocation_list

    settings = broker.config.settings
    now, changes = time.monotonic(), broker.store.changes
    cached = broker._revocation_list
    if cached is not None and now - cached[0] < LIST_CACHE and cached[1] == changes:
        signed = cached[2]  # built a moment ago, nothing revoked here since: one build a second
    else:
        signed = await asyncio.to_thread(
            build_revocation_list,
            broker.store,
            broker.issuer.key,
            issuer=settings.issuer,
            max_ttl=settings.max_ttl,
        )
        broker._revocation_list = (now, changes, signed)
    return Response(
        signed,
        media_type="application/revocation-list+jwt",
        headers={"cache-control": "no-store"},
    )


async def _revoke(request: Request, broker: _Broker) -> Response:
    from ..tokens.revocation import revoke, revoke_agent, revoke_token

    caller = _admin(request, broker)
    asked = _model(_RevokeRequest, await _json_body(request, broker))
    given = [name for name in ("jti", "token", "agent") if getattr(asked, name) is not None]
    if len(given) != 1:
        raise Problem(400, "invalid-request", "give exactly one of jti, token, agent")
    settings = broker.config.settings
    if asked.agent is not None:
        done = revoke_agent(
            broker.store,
            asked.agent,
            reason=asked.reason,
            max_ttl=settings.max_ttl,
            leeway=settings.leeway,
        )
    elif asked.token is not None:
        done = revoke_token(
            broker.store, asked.token, reason=asked.reason, max_ttl=settings.max_ttl
        )
    else:
        done = revoke(broker.store, str(asked.jti), reason=asked.reason, max_ttl=settings.max_ttl)
    _log.warning("%s revoked %s %r", _describe(caller), done.kind, done.target)
    broker.audit.revoked(caller, done.kind, done.target, asked.reason)
    body = {"revoked": done.kind, "target": done.target, "kept_until": done.kept_until}
    return JSONResponse(body, status_code=201)


class _AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    reason: str | None = Field(default=None, max_length=1000)
    by: str | None = Field(default=None, max_length=200)  # a name shown beside the caller's


def _request_id(request: Request) -> str:
    return str(request.path_params["request_id"])


async def _approvals(request: Request, broker: _Broker) -> Response:
    """Every request waiting for a human, whole (admins only)."""
    from ..state.approvals import pending

    _admin(request, broker)
    waiting = await asyncio.to_thread(pending, broker.store)
    body = {"approvals": [item.to_dict() for item in waiting]}
    return JSONResponse(body, headers={"cache-control": "no-store"})


async def _approval(request: Request, broker: _Broker) -> Response:
    """One waiting request, whole (admins only)."""
    from ..state.approvals import lookup

    _admin(request, broker)
    found = await asyncio.to_thread(lookup, broker.store, _request_id(request))
    return JSONResponse(found.to_dict(), headers={"cache-control": "no-store"})


async def _answer(request: Request, broker: _Broker, approved: bool) -> Response:
    """Approve or deny one waiting request; the broker records who answered (admins only)."""
    from ..state.approvals import approve, deny

    caller = _admin(request, broker)
    asked = _model(_AnswerRequest, await _json_body(request, broker))
    for name in ("reason", "by"):
        text = getattr(asked, name)
        if text is not None and not text.isprintable():
            raise Problem(400, "invalid-request", f"{name}: expected printable text")
    who = _describe(caller) if asked.by is None else f"{_describe(caller)} as {asked.by!r}"
    request_id = _request_id(request)
    if approved:
        answered = await asyncio.to_thread(approve, broker.store, request_id, by=who)
    else:
        answered = await asyncio.to_thread(
            deny, broker.store, request_id, by=who, reason=asked.reason
        )
    verb = "approved" if approved else "denied"
    _log.warning("%s %s approval request %s", who, verb, request_id)
    broker.audit.answered(caller, answered, approved=approved, by=who, reason=asked.reason)
    return JSONResponse(answered.to_dict(), headers={"cache-control": "no-store"})


async def _approve(request: Request, broker: _Broker) -> Response:
    return await _answer(request, broker, True)


async def _deny(request: Request, broker: _Broker) -> Response:
    return await _answer(request, broker, False)


class _ElevationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    token: str = Field(max_length=8192)
    scope: str = Field(min_length=1, max_length=256)
    function: str = Field(min_length=1, max_length=512)
    arguments: str  # the call's canonical arguments (approvals.canonical_arguments)
    reason: str | None = Field(default=None, max_length=1000)
    timeout: int | None = None  # seconds to wait for a human


def _elevation_claims(broker: _Broker, token: str) -> Any:
    from .elevation import authenticate

    settings = broker.config.settings
    return authenticate(token, broker.keys.public_keys(), broker.store, settings)


async def _file_elevation(request: Request, broker: _Broker) -> Response:
    """File one call's request for a human; the asking token is its own authentication."""
    from ..tokens.scopes import ScopeSet
    from .elevation import TooManyPendingError, ask_refusal, file_elevation

    asked = _model(_ElevationRequest, await _json_body(request, broker))
    for name in ("function", "reason"):
        text = getattr(asked, name)
        if text is not None and not text.isprintable():
            raise Problem(400, "invalid-request", f"{name}: expected printable text")
    ScopeSet.parse([asked.scope])
    claims = await asyncio.to_thread(_elevation_claims, broker, asked.token)
    await require_possession(request, broker.proofs, asked.token, claims, "body")
    peer = peer_of(request.scope)  # on the socket its uid; over TCP the asking token's root
    if peer is not None:  # agent at the address (a sub-agent elsewhere cannot use it up)
        who = f"uid:{peer.uid}"
    else:
        client = request.client
        address = _peer_key(None, (client.host, client.port) if client else None) or "unknown"
        who = f"agent:{claims.subject} at {address}"
    _limit(broker, "elevation", who, caller=who if peer else None, agent=claims.subject)
    policy = broker.policy
    try:
        refusal = ask_refusal(policy, claims, asked.scope)  # a delegated token: narrowed
        if refusal is not None:
            raise refusal
        filed = await asyncio.to_thread(
            functools.partial(
                file_elevation,
                broker.store,
                claims,
                scope=asked.scope,
                function=asked.function,
                arguments=asked.arguments,
                reason=asked.reason,
                timeout=asked.timeout,
                may_ask=True,  # ask_refusal said so
            )
        )
    except TooManyPendingError as exc:
        broker.audit.refused(None, "elevation", str(exc), agent=claims.subject)
        raise Problem(429, "too-many-requests", str(exc)) from None
    except AgentSudoError as exc:
        _log.warning("refused an elevation request of %r: %s", claims.subject, exc)
        broker.audit.refused(None, "elevation", str(exc), agent=claims.subject)
        raise
    _log.warning("agent %r asks for %r: request %s", claims.subject, asked.scope, filed.id)
    broker.audit.requested(filed, list(claims.chain))
    webhook = policy.notify if isinstance(policy, Policy) else None
    if webhook is not None:  # posted by the notifier's threads: filing never waits for it
        broker.notifier.submit(webhook, filed)
    broker.slack.filed(policy.slack if isinstance(policy, Policy) else None, filed)
    body = {"id": filed.id, "expires_at": filed.expires_at}
    return JSONResponse(body, status_code=202, headers={"cache-control": "no-store"})


async def _elevation(request: Request, broker: _Broker) -> Response:
    """Where a request stands, for the token that filed it; an approval's token, once."""
    from ..errors import UnknownApprovalError
    from .elevation import elevation_status

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "dpop") or not token.strip():
        raise Problem(401, "unauthenticated", "present the asking token as a Bearer token")
    request_id = str(request.path_params["request_id"])
    if not request_id.startswith("apr_") or len(request_id) > 90:
        raise UnknownApprovalError(f"no elevation request {request_id!r}")
    claims = await asyncio.to_thread(_elevation_claims, broker, token.strip())
    await require_possession(request, broker.proofs, token.strip(), claims, scheme.lower())
    answer = await asyncio.to_thread(
        functools.partial(
            elevation_status,
            broker.store,
            claims,
            request_id,
            key=broker.issuer.key,
            issuer=broker.config.settings.issuer,
        )
    )
    if answer["status"] == "approved":
        _log.warning("elevation token for request %s handed to %r", request_id, claims.subject)
        broker.audit.elevation("elevation_issued", None, request_id, agent=claims.subject)
    return JSONResponse(answer, headers={"cache-control": "no-store"})


async def _budgets(request: Request, broker: _Broker) -> Response:
    """A token's budgets as they stand (its holder, or an admin): ``budget_api``."""
    return await balances_endpoint(request, broker, admin=_admin)


async def _console_link(request: Request, broker: _Broker) -> Response:
    """A one-time login link to the console, for an admin (``agentsudo console``)."""
    from .console import new_link

    caller = _admin(request, broker)
    value, expires = await asyncio.to_thread(new_link, broker.store, caller)
    broker.audit.record("console_link", caller=principal(caller), expires_at=int(expires))
    path = f"/console/login?t={value}"
    base = broker.console.base_url
    body = {"path": path, "url": base + path if base else None, "expires_at": int(expires)}
    return JSONResponse(body, status_code=201, headers={"cache-control": "no-store"})


async def _console_events(request: Request, broker: _Broker) -> Response:
    """Decisions a service forwards to the console's feed (an admin, or a policy forwarder)."""
    from .console import ForwardedBatch

    caller = caller_of(request, broker)
    policy = broker.policy
    forwarders = policy.forwarders if isinstance(policy, Policy) else ()
    who = str(principal(caller))
    if not (policy.is_admin(caller) or any(p.matches(caller) for p in forwarders)):
        _limit(broker, "admin", who, caller=who)
        reason = f"{_describe(caller)} may not forward events (not an admin or a forwarder)"
        broker.audit.refused(caller, f"{request.method} {request.url.path}", reason)
        raise Problem(403, "forbidden", reason)
    _limit(broker, "forward", who, caller=who)
    batch = _model(ForwardedBatch, await _json_body(request, broker))
    taken = broker.console.feed.forward(batch.events, source=who)
    return JSONResponse({"accepted": taken}, status_code=202)


async def _check_audit_until_done(broker: _Broker, every: float = 5.0) -> None:
    """The start's check of the audit against its kept head, again until the store answers."""
    while True:
        await asyncio.sleep(every)
        if broker.check_audit():
            return


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    broker: _Broker = app.state.broker
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, broker.reload)  # only in the main thread
    checked = broker.check_audit()
    broker.audit.started(broker.config.policy_path)  # and a signed head
    tasks = [
        asyncio.create_task(broker.audit.keep_signing()),
        asyncio.create_task(broker.quiet.keep_summarising()),
    ]
    if not checked:  # the store was away: look again until it answers
        tasks.append(asyncio.create_task(_check_audit_until_done(broker)))
    unwatch = _watch_pending(broker)
    try:
        yield
    finally:
        unwatch()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        broker.quiet.summarise(everything=True)  # the refusals counted so far
        broker.audit.stopped()  # and the last signed head
        broker.close()


def _watch_pending(broker: _Broker) -> Callable[[], None]:
    """With telemetry on (``AGENTSUDO_OTEL=1``, ``enable_otel``): the store's waiting
    approvals as the ``agentsudo.approvals.pending`` gauge. Returns what stops it."""
    from ..audit.otel import otel_enabled, watch_pending
    from ..state.approvals import pending

    if not otel_enabled():
        return lambda: None
    return watch_pending(lambda: len(pending(broker.store)))


async def _not_found(request: Request, exc: Exception) -> Response:
    return problem_response(Problem(404, "not-found", f"no such endpoint: {request.url.path}"))


async def _wrong_method(request: Request, exc: Exception) -> Response:
    return problem_response(Problem(405, "method-not-allowed", f"{request.method} is not allowed"))


def create_app(config: BrokerConfig) -> Starlette:
    """The broker's ASGI app. Opens the keys, the store and the policy now.

    :raises ConfigError: the key directory, the store URL or the policy is unusable
        (a broker with a bad policy does not start).
    """
    broker = _Broker(config)
    routes = [
        Route("/healthz", _endpoint(_healthz), methods=["GET"]),
        Route("/.well-known/jwks.json", _endpoint(_jwks), methods=["GET"]),
        Route("/v1/tokens", _endpoint(_issue), methods=["POST"]),
        Route("/v1/revocations", _endpoint(_revocation_list), methods=["GET"]),
        Route("/v1/audit/head", _endpoint(_audit_head), methods=["GET"]),
        Route("/v1/revocations", _endpoint(_revoke), methods=["POST"]),
        Route("/v1/approvals", _endpoint(_approvals), methods=["GET"]),
        Route("/v1/approvals/{request_id}", _endpoint(_approval), methods=["GET"]),
        Route("/v1/approvals/{request_id}/approve", _endpoint(_approve), methods=["POST"]),
        Route("/v1/approvals/{request_id}/deny", _endpoint(_deny), methods=["POST"]),
        Route("/v1/elevations", _endpoint(_file_elevation), methods=["POST"]),
        Route("/v1/elevations/{request_id}", _endpoint(_elevation), methods=["GET"]),
        Route(EXCHANGE_PATH, exchange_endpoint, methods=["POST"]),  # RFC 8693: delegation
        Route(SPEND_PATH, _endpoint(spend_endpoint), methods=["POST"]),  # budgets, debited here
        Route(BUDGETS_PATH, _endpoint(_budgets), methods=["GET"]),
        Route(SLACK_PATH, _endpoint(interactions_endpoint), methods=["POST"]),  # Slack's clicks
        Route("/v1/console/links", _endpoint(_console_link), methods=["POST"]),
        Route("/v1/console/events", _endpoint(_console_events), methods=["POST"]),
        *console_routes(),  # the web console's pages (broker.console)
    ]
    app = Starlette(
        routes=routes,
        lifespan=_lifespan,
        exception_handlers={404: _not_found, 405: _wrong_method},
    )
    app.state.broker = broker
    return app


def group_id(name: str) -> int:
    """A group's id by name (for ``--socket-group``).

    :raises ConfigError: no such group.
    """
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"--socket-group: no group named {name!r}") from None

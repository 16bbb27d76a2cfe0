"""Agents and their sessions: who is acting, with which scopes, until when.

    bot = Agent(name="SupportBot", scopes=["read:orders", "write:refunds"])
    with bot.start_session():
        process_refund("order_123", 50)          # checked by @sudo

    with Agent.from_token(token).start_session():  # a verified token
        ...

The active session lives in a ``ContextVar``: each thread and asyncio task sees
its own, sessions nest and restore the outer one on exit. When no session is
active and ``AGENTSUDO_TOKEN`` is set, that token (verified once per process)
is the ambient agent: the identity of an agent *process*. A process that
serves requests (``AgentSudoMiddleware``, ``require_scope``, an MCP server
with ``guarded_tool``) calls ``disable_ambient_agent()``: from then on the
ambient token never acts by itself, in any thread or task, so no request can
borrow the service's identity. Such a service acts as itself explicitly:
``with Agent.from_env().start_session(): ...``.

An ``Agent`` is read-only: its name, scopes and verified claims cannot be
reassigned (``agent.scopes = ...`` raises ``AttributeError``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ConfigError, InvalidTokenError, PermissionDeniedError
from ..tokens.claims import check_agent_name
from ..tokens.scopes import ScopeSet, validate_required_scope

if TYPE_CHECKING:
    from ..broker.client import BrokerClient
    from ..tokens.claims import VerifiedClaims
    from ..tokens.limits import Limits
    from ..tokens.verifier import Verifier

__all__ = [
    "Agent",
    "Session",
    "current_agent",
    "disable_ambient_agent",
    "require_signed_sessions",
    "without_agent",
]

_set = object.__setattr__  # Agent forbids assignment; its own constructors write through this


@dataclass(slots=True, eq=False)
class _Active:
    """One live session: the agent, its compiled scopes and two monotonic times.

    ``expires`` ends the session (its TTL, the token's ``exp``). ``deadline`` is
    what the guard's fast path compares with: ``expires``, or sooner, when the
    token's revocation is to be asked about again (``recheck_session``).
    """

    agent: Agent
    exact: frozenset[str]
    scopes: ScopeSet
    deadline: float
    trusted: bool  # signed, or unsigned sessions are allowed in this process
    expires: float = math.inf
    limits: Limits | None = None  # the token's limits on arguments and budgets (tokens.limits)


_current: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
    "agentsudo_session", default=None
)


_AGENTS_KEPT = 1024


class _ProcessPolicy:
    """Process-wide facts, read once: signed sessions only, the default verifier, the ambient agent.

    ``reset()`` forgets them all (the tests call it between tests).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signed_only: bool | None = None
        self.ambient: _Active | None = None
        self.ambient_read = False
        self.ambient_recheck_at = 0.0  # monotonic: when to ask again if the token was revoked
        self.ambient_off = False  # this process serves requests: AGENTSUDO_TOKEN never acts alone
        self.verifier: Verifier | None = None
        self.agents: dict[str, Agent] = {}  # token -> its Agent, while its claims are cached

    def remember(self, token: str, agent: Agent) -> None:
        """Keep the agent of a verified token for its next ``from_token`` (bounded)."""
        agents = self.agents
        if len(agents) >= _AGENTS_KEPT:
            agents.clear()  # rare, and the next calls rebuild what they use
        agents[token] = agent

    def require_signed(self) -> bool:
        if self.signed_only is None:
            with self.lock:
                if self.signed_only is None:
                    self.signed_only = Settings.from_env().require_signed
        return self.signed_only

    def default_verifier(self) -> Verifier:
        """The verifier for ``AGENTSUDO_JWKS`` (or the key directory), built once per process.

        :raises ConfigError: no public keys to verify with (not remembered: the next call retries).
        """
        verifier = self.verifier
        if verifier is None:
            from ..tokens.verifier import Verifier

            with self.lock:
                verifier = self.verifier
                if verifier is None:
                    verifier = self.verifier = Verifier.from_settings(Settings.from_env())
        return verifier

    def no_session_hint(self) -> str:
        """What to do when no agent acts, for a refusal's message."""
        if self.ambient_off:
            return (
                "this process serves requests, so only the caller's token acts "
                "(its own AGENTSUDO_TOKEN only in an explicit session)"
            )
        return "start a session or set AGENTSUDO_TOKEN"

    def reset(self) -> None:
        with self.lock:
            self.signed_only = None
            self.ambient = None
            self.ambient_read = False
            self.ambient_off = False
            self.verifier = None
            self.agents = {}
        from .budget import reset_default_ledger  # the budgets' store, opened from the settings

        reset_default_ledger()


_policy = _ProcessPolicy()


def _renew_policy_lock() -> None:  # a thread of the parent may have held it at the fork
    _policy.lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_policy_lock)


def require_signed_sessions() -> None:
    """From now on, ``@sudo`` accepts only sessions from verified tokens.

    A ratchet: it cannot be turned off again in this process. The same as
    ``AGENTSUDO_REQUIRE_SIGNED=1``. Call it at start-up, before sessions begin.
    """
    with _policy.lock:
        _policy.signed_only = True


def disable_ambient_agent() -> None:
    """From now on, ``AGENTSUDO_TOKEN`` never acts by itself in this process.

    For a process that serves requests: code handling a request, in any thread
    or task (``run_in_executor``, a plain ``threading.Thread``), must act as the
    caller or as nobody, never as the service. ``AgentSudoMiddleware``,
    ``require_scope`` and ``guarded_tool`` call it; call it at start-up in a
    server of another kind. A ratchet, like ``require_signed_sessions``. The
    service still acts as itself where it says so:
    ``with Agent.from_env().start_session(): ...``.
    """
    _policy.ambient_off = True


class Agent:
    """An agent's identity and granted scopes.

    Built in-process (unsigned: for development, tests and single-process
    apps) or with ``Agent.from_token`` (signed and verified).

    :param name: the agent's name.
    :param scopes: granted scopes, wildcards allowed (``read:*``, ``read:**``).
    :param session_ttl: seconds after which each session of this agent ends.
    :raises ConfigError: a name outside the agent-name grammar, or a bad ``session_ttl``.
    :raises InvalidScopeError: a scope outside the grammar.
    """

    __slots__ = ("name", "scopes", "session_ttl", "_claims", "_token", "_valid_until", "_verifier")

    name: str
    scopes: ScopeSet
    session_ttl: float | None
    _claims: VerifiedClaims | None
    _token: str | None
    _valid_until: float
    _verifier: Verifier | None

    def __init__(
        self,
        name: str,
        scopes: list[str] | tuple[str, ...] | str | ScopeSet,
        *,
        session_ttl: float | None = None,
    ) -> None:
        check_agent_name(name)
        if session_ttl is not None and not session_ttl > 0:
            raise ConfigError(
                f"session_ttl: expected a positive number of seconds, found {session_ttl!r}"
            )
        _set(self, "name", name)
        _set(self, "scopes", scopes if isinstance(scopes, ScopeSet) else ScopeSet.parse(scopes))
        _set(self, "session_ttl", session_ttl)
        _set(self, "_claims", None)
        _set(self, "_token", None)
        _set(self, "_valid_until", math.inf)  # wall clock: the token's exp plus the leeway
        _set(self, "_verifier", None)  # the verifier that accepted the token, to ask again

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"an Agent is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"an Agent is read-only: cannot delete {name!r}")

    def __copy__(self) -> Agent:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> Agent:
        return self

    @classmethod
    def from_token(cls, token: str, *, verifier: Verifier | None = None) -> Agent:
        """An agent from a verified token: its ``sub`` and ``scope`` claims.

        :param verifier: defaults to one for ``AGENTSUDO_JWKS`` or the key
            directory, built once per process.
        :raises InvalidTokenError: the token was refused (the subclass says why).
        :raises ConfigError: no public keys to verify with.
        """
        if verifier is None:
            verifier = _policy.verifier or _policy.default_verifier()
        claims = verifier.verify(token)
        valid_until = claims.expires_at + verifier.leeway
        known = _policy.agents.get(token)  # agents are read-only: one per verified token
        if known is not None and known._claims is claims and known._valid_until == valid_until:
            return known
        agent = cls.__new__(cls)
        _set(agent, "name", claims.agent)  # a delegated token: the sub-agent acting
        _set(agent, "scopes", claims.scopes)
        _set(agent, "session_ttl", None)
        _set(agent, "_claims", claims)
        _set(agent, "_token", token)
        _set(agent, "_valid_until", valid_until)
        _set(agent, "_verifier", verifier)
        _policy.remember(token, agent)
        return agent

    @classmethod
    def from_env(cls, *, verifier: Verifier | None = None) -> Agent:
        """This process's own agent: ``AGENTSUDO_TOKEN``, verified.

        For a service that acts as itself outside requests (its ambient agent is
        off once it serves requests): ``with Agent.from_env().start_session(): ...``.

        :param verifier: as for ``from_token``.
        :raises ConfigError: ``AGENTSUDO_TOKEN`` is not set, or no public keys.
        :raises InvalidTokenError: the token was refused.
        """
        token = Settings.from_env().token
        if token is None:
            raise ConfigError(
                "AGENTSUDO_TOKEN is not set: this process has no agent of its own",
                expected="AGENTSUDO_TOKEN",
                found=None,
            )
        return cls.from_token(token, verifier=verifier)

    @property
    def signed(self) -> bool:
        """True when this agent comes from a verified token."""
        return self._claims is not None

    @property
    def claims(self) -> VerifiedClaims | None:
        """The verified token's claims, or ``None`` for an in-process agent."""
        return self._claims

    @property
    def jti(self) -> str | None:
        """The token's id (for audit), or ``None``."""
        return self._claims.jti if self._claims is not None else None

    @property
    def token(self) -> str | None:
        """The verified token, to pass on to a child process or a service."""
        return self._token

    @property
    def chain(self) -> tuple[str, ...]:
        """Who acts for whom: ``(root agent, ..., this agent)``; ``(name,)`` when not delegated.

        From the token's ``sub`` and ``act`` (RFC 8693 §4.1): ``name`` is the last.
        """
        return self._claims.chain if self._claims is not None else (self.name,)

    def delegate(
        self,
        name: str | None = None,
        *,
        scopes: list[str] | tuple[str, ...] | str | None = None,
        ttl: int | None = None,
        audience: str | list[str] | None = None,
        broker: BrokerClient | None = None,
        limits: list[str] | tuple[str, ...] | None = None,
        budgets: list[str] | tuple[str, ...] | None = None,
    ) -> Agent:
        """An agent for sub-agent ``name`` with a token exchanged for this agent's (RFC 8693).

        The broker (``AGENTSUDO_BROKER``, or ``broker``) mints it: scopes, audience and
        lifetime within this token's (default: the same scopes and audience, the
        broker's TTL cut to this token's ``exp``), if the root agent's policy lets
        its grant be passed on that deep. Revoking this token revokes the child.

        :param name: the sub-agent (its ``act``); default this agent's own name.
        :param limits: narrower limits for the child (``'write:refunds amount<=50'``); it
            carries this token's that may apply to its scopes anyway.
        :param budgets: the child's budgets (``'write:refunds amount=100'``), carved out
            of what this token's budgets have left; one is needed for each of them that
            may apply to the child's scopes.
        :raises DelegationRefusedError: beyond this token or the policy (``reason`` says which;
            ``limits``, ``budget``).
        :raises InvalidTokenError: this token is refused (expired, revoked).
        :raises ConfigError: an unsigned agent, or no broker.
        """
        from .delegation import exchange_token

        token = exchange_token(
            self._token,
            self.name,
            name,
            scopes=scopes,
            ttl=ttl,
            audience=audience,
            broker=broker,
            limits=limits,
            budgets=budgets,
        )
        return Agent.from_token(token, verifier=self._verifier)

    def has_scope(self, scope: str) -> bool:
        """True when a granted scope covers the concrete ``scope``.

        :raises InvalidScopeError: ``scope`` is not a valid concrete scope.
        """
        return self.scopes.allows(validate_required_scope(scope))

    def start_session(self) -> Session:
        """A context manager (``with`` or ``async with``) making this agent the active one."""
        return Session(self)

    def __repr__(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        chain = self.chain
        by = f", chain={list(chain)!r}" if len(chain) > 1 else ""
        return f"Agent(name={self.name!r}, scopes={list(self.scopes.scopes)!r}, {kind}{by})"


def _deadline(agent: Agent) -> float:
    """When a session started now must end, on the monotonic clock."""
    deadline = math.inf
    if agent.session_ttl is not None:
        deadline = time.monotonic() + agent.session_ttl
    if agent._valid_until != math.inf:
        deadline = min(deadline, time.monotonic() + (agent._valid_until - time.time()))
    return deadline


def _activate(agent: Agent) -> _Active:
    trusted = agent.signed or not _policy.require_signed()
    expires = _deadline(agent)
    deadline = expires
    if _rechecks(agent):
        deadline = min(expires, time.monotonic() + SESSION_RECHECK)
    limits = agent._claims.limits if agent._claims is not None else None
    return _Active(agent, agent.scopes.exact, agent.scopes, deadline, trusted, expires, limits)


SESSION_RECHECK = 1.0  # seconds between asking the store whether a session's token was revoked


def _rechecks(agent: Agent) -> bool:
    verifier = agent._verifier
    if verifier is None or agent._claims is None:
        return False
    return verifier.store is not None or verifier.revocations is not None


def recheck_session(active: _Active, scope: str) -> PermissionDeniedError | None:
    """Ask again whether the token of a live session was revoked since it started.

    Called by the guard when a session's ``deadline`` (but not its ``expires``)
    has passed: a session opened by a service for a long request (a WebSocket,
    a stream) or by code (``with Agent.from_token(t).start_session():``) stops
    within about a second of ``agentsudo revoke``. ``None``: still good, and the
    next check is a second away. Else the refusal; the session stays refused.
    """
    agent = active.agent
    why = refused_since(agent)
    if why is not None:
        return PermissionDeniedError(
            f"the token of agent {agent.name!r} was refused after its session began: {why}",
            agent=agent.name,
            scope=scope,
            expected="a token not revoked",
            found="refused since",
        )
    active.deadline = min(active.expires, time.monotonic() + SESSION_RECHECK)
    return None


def refused_since(agent: Agent) -> str | None:
    """Why the verified token of ``agent`` is refused now (revoked, store down), or ``None``.

    For checks after a wait: a call a human approved must not run if its token
    was revoked while it waited. An unsigned agent, or a verifier without a
    store, has nothing to ask: ``None``.
    """
    verifier, claims = agent._verifier, agent._claims
    if verifier is None or claims is None:
        return None
    try:
        verifier.check_revocation(claims)
    except (InvalidTokenError, ConfigError) as exc:  # revoked, or the store is down: fail closed
        return str(exc)
    return None


class Session:
    """One session of one agent. Each ``start_session()`` has its own clock."""

    __slots__ = ("agent", "_reset", "_active")

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._reset: contextvars.Token[_Active | None] | None = None
        self._active: _Active | None = None

    def __enter__(self) -> Agent:
        if self._reset is not None:
            raise RuntimeError("this session is already active; call start_session() again")
        active = _activate(self.agent)
        if not active.trusted:
            raise PermissionDeniedError(
                f"agent {self.agent.name!r} is unsigned and this process requires signed "
                "sessions (AGENTSUDO_REQUIRE_SIGNED)",
                agent=self.agent.name,
                expected="a verified token",
                found="in-process agent",
            )
        from ..audit.events import emit_session

        reset = _current.set(active)
        try:
            emit_session("session_start", self.agent)
        except BaseException:
            _current.reset(reset)  # a session that could not be recorded never starts
            raise
        self._active, self._reset = active, reset
        return self.agent

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reset, self._reset = self._reset, None
        if reset is not None:
            _current.reset(reset)
            from ..audit.events import emit_session

            emit_session("session_end", self.agent)

    async def __aenter__(self) -> Agent:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @property
    def expired(self) -> bool:
        """True once this session's deadline has passed."""
        active = self._active
        return active is not None and time.monotonic() >= active.expires


def _ambient() -> _Active | None:
    """The process's agent from ``AGENTSUDO_TOKEN``, verified once; ``None`` if unset or off.

    :raises PermissionDeniedError: the variable is set but its token is refused.
    """
    if _policy.ambient_off:  # a process serving requests: never the service's own identity
        return None
    if _policy.ambient_read:
        active = _policy.ambient
        if active is not None and time.monotonic() >= _policy.ambient_recheck_at:
            _recheck_ambient(active.agent)
        return active
    settings = Settings.from_env()
    if settings.token is None:
        with _policy.lock:
            _policy.ambient_read = True
        return None
    try:
        agent = Agent.from_token(settings.token)
    except (InvalidTokenError, ConfigError) as exc:
        raise PermissionDeniedError(
            f"AGENTSUDO_TOKEN was refused: {exc}",
            expected="a valid token",
            found=type(exc).__name__,
        ) from exc
    active = _activate(agent)
    with _policy.lock:
        _policy.ambient, _policy.ambient_read = active, True
        _policy.ambient_recheck_at = time.monotonic() + AMBIENT_RECHECK
    return active


AMBIENT_RECHECK = 1.0  # seconds between asking the store whether AGENTSUDO_TOKEN was revoked


def _recheck_ambient(agent: Agent) -> None:
    """Ask again whether the ambient token was revoked since; forget it if it was.

    A long-running process honours ``agentsudo revoke`` within about a second.
    A one-time ambient token is checked for revocation only (its one use was
    the first verification).

    :raises PermissionDeniedError: the token is refused now (revoked, or the store is down).
    """
    claims, token = agent.claims, agent.token
    try:
        verifier = _policy.default_verifier()
        if claims is not None and claims.single_use:
            verifier.check_revocation(claims)
        elif token is not None:
            verifier.verify(token)
    except (InvalidTokenError, ConfigError) as exc:
        with _policy.lock:  # the next call verifies from scratch, and is refused again
            _policy.ambient, _policy.ambient_read = None, False
        raise PermissionDeniedError(
            f"AGENTSUDO_TOKEN was refused: {exc}",
            expected="a valid token",
            found=type(exc).__name__,
        ) from exc
    _policy.ambient_recheck_at = time.monotonic() + AMBIENT_RECHECK


def _active_session() -> _Active | None:
    """The innermost session in this context, else the ambient agent (unless shut out)."""
    active = _current.get()
    if active is None:
        return _ambient()
    return None if active is _NOBODY else active


_NOBODY = _Active(Agent("nobody", []), frozenset(), ScopeSet([]), -math.inf, False, -math.inf)


@contextlib.contextmanager
def without_agent() -> Iterator[None]:
    """Within this block no agent acts, not even the ambient ``AGENTSUDO_TOKEN`` one.

    For code that serves others: a service that handles a request without a
    token must not fall back to its own identity.
    """
    reset = _current.set(_NOBODY)
    try:
        yield
    finally:
        _current.reset(reset)


def current_agent() -> Agent | None:
    """The agent acting now: the innermost session's, else the ambient one, else ``None``.

    :raises PermissionDeniedError: ``AGENTSUDO_TOKEN`` is set but refused.
    """
    active = _active_session()
    return active.agent if active is not None else None

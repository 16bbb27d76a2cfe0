"""Agents and their sessions: who is acting, with which scopes, until when.

    bot = Agent(name="SupportBot", scopes=["read:orders", "write:refunds"])
    with bot.start_session():
        process_refund("order_123", 50)          # checked by @sudo

    with Agent.from_token(token).start_session():  # a verified token
        ...

The active session lives in a ``ContextVar``: each thread and asyncio task sees
its own, sessions nest and restore the outer one on exit. When no session is
active and ``AGENTSUDO_TOKEN`` is set, that token (verified once per process)
is the ambient agent.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from .config import Settings
from .errors import ConfigError, InvalidTokenError, PermissionDeniedError
from .scopes import ScopeSet, validate_required_scope

if TYPE_CHECKING:
    from .claims import VerifiedClaims
    from .verifier import Verifier

__all__ = ["Agent", "Session", "current_agent", "require_signed_sessions", "without_agent"]


@dataclass(frozen=True, slots=True, eq=False)
class _Active:
    """One live session: the agent, its compiled scopes and a monotonic deadline."""

    agent: Agent
    exact: frozenset[str]
    scopes: ScopeSet
    deadline: float
    trusted: bool  # signed, or unsigned sessions are allowed in this process


_current: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
    "agentsudo_session", default=None
)


class _ProcessPolicy:
    """Process-wide facts read once: require signed sessions, the ambient agent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signed_only: bool | None = None
        self.ambient: _Active | None = None
        self.ambient_read = False
        self.verifiers: dict[tuple[str, str, str, int, int, int, str | None], Verifier] = {}

    def require_signed(self) -> bool:
        if self.signed_only is None:
            with self.lock:
                if self.signed_only is None:
                    self.signed_only = Settings.from_env().require_signed
        return self.signed_only

    def default_verifier(self, settings: Settings) -> Verifier:
        from .verifier import Verifier

        key = (
            settings.jwks_source,
            settings.issuer,
            settings.audience,
            settings.leeway,
            settings.max_ttl,
            settings.jwks_cache_ttl,
            settings.store,
        )
        with self.lock:
            verifier = self.verifiers.get(key)
            if verifier is None:
                verifier = self.verifiers[key] = Verifier.from_settings(settings)
            return verifier

    def reset(self) -> None:
        with self.lock:
            self.signed_only = None
            self.ambient = None
            self.ambient_read = False
            self.verifiers.clear()


_policy = _ProcessPolicy()


def require_signed_sessions() -> None:
    """From now on, ``@sudo`` accepts only sessions from verified tokens.

    A ratchet: it cannot be turned off again in this process. The same as
    ``AGENTSUDO_REQUIRE_SIGNED=1``. Call it at start-up, before sessions begin.
    """
    with _policy.lock:
        _policy.signed_only = True


class Agent:
    """An agent's identity and granted scopes.

    Built in-process (unsigned: for development, tests and single-process
    apps) or with ``Agent.from_token`` (signed and verified).

    :param name: the agent's name.
    :param scopes: granted scopes, wildcards allowed (``read:*``, ``read:**``).
    :param session_ttl: seconds after which each session of this agent ends.
    :raises InvalidScopeError: a scope outside the grammar.
    """

    __slots__ = ("name", "scopes", "session_ttl", "_claims", "_token", "_valid_until")

    name: str
    scopes: ScopeSet
    session_ttl: float | None

    def __init__(
        self,
        name: str,
        scopes: list[str] | tuple[str, ...] | str | ScopeSet,
        *,
        session_ttl: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"agent name: expected a non-empty string, found {name!r}")
        if session_ttl is not None and not session_ttl > 0:
            raise ConfigError(
                f"session_ttl: expected a positive number of seconds, found {session_ttl!r}"
            )
        self.name = name
        self.scopes = scopes if isinstance(scopes, ScopeSet) else ScopeSet.parse(scopes)
        self.session_ttl = session_ttl
        self._claims: VerifiedClaims | None = None
        self._token: str | None = None
        self._valid_until = math.inf  # wall clock: the token's exp plus the verifier's leeway

    @classmethod
    def from_token(cls, token: str, *, verifier: Verifier | None = None) -> Agent:
        """An agent from a verified token: its ``sub`` and ``scope`` claims.

        :param verifier: defaults to one for ``AGENTSUDO_JWKS`` or the key directory.
        :raises InvalidTokenError: the token was refused (the subclass says why).
        :raises ConfigError: no public keys to verify with.
        """
        if verifier is None:
            verifier = _policy.default_verifier(Settings.from_env())
        claims = verifier.verify(token)
        agent = cls(claims.subject, claims.scopes)
        agent._claims = claims
        agent._token = token
        agent._valid_until = claims.expires_at + verifier.leeway
        return agent

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
        return f"Agent(name={self.name!r}, scopes={list(self.scopes.scopes)!r}, {kind})"


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
    return _Active(agent, agent.scopes.exact, agent.scopes, _deadline(agent), trusted)


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
        from .audit import emit_session

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
            from .audit import emit_session

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
        return active is not None and time.monotonic() >= active.deadline


def _ambient() -> _Active | None:
    """The process's agent from ``AGENTSUDO_TOKEN``, verified once; ``None`` if unset.

    :raises PermissionDeniedError: the variable is set but its token is refused.
    """
    if _policy.ambient_read:
        return _policy.ambient
    settings = Settings.from_env()
    if settings.token is None:
        with _policy.lock:
            _policy.ambient_read = True
        return None
    try:
        agent = Agent.from_token(settings.token, verifier=_policy.default_verifier(settings))
    except (InvalidTokenError, ConfigError) as exc:
        raise PermissionDeniedError(
            f"AGENTSUDO_TOKEN was refused: {exc}",
            expected="a valid token",
            found=type(exc).__name__,
        ) from exc
    active = _activate(agent)
    with _policy.lock:
        _policy.ambient, _policy.ambient_read = active, True
    return active


def _active_session() -> _Active | None:
    """The innermost session in this context, else the ambient agent (unless shut out)."""
    active = _current.get()
    if active is None:
        return _ambient()
    return None if active is _NOBODY else active


_NOBODY = _Active(Agent("(nobody)", []), frozenset(), ScopeSet([]), -math.inf, False)


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

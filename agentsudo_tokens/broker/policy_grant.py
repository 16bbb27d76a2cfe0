"""The policy's decisions: who may obtain which agent's tokens, with what scopes, TTL, audience.

    grant = policy.grant(caller, "SupportBot", scopes=["read:orders"], ttl=600, audience=None)
    policy.needs_human("SupportBot", "delete:customer")   # True: one call at a time, by a human

A caller asking for more than the policy allows gets a ``PolicyRefusal`` saying
what it asked and what the policy allows that agent; one that may not obtain the
agent's tokens learns nothing about its policy (an unknown agent reads the same).
``Granting`` is the decision's outline, which dev mode's ``DevPolicy`` fills in too.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..config import DEFAULT_TTL
from ..errors import ConfigError, InvalidScopeError, PermissionDeniedError
from ..tokens.claims import is_agent_name
from ..tokens.limit_entry import concerns
from ..tokens.limits import Limits
from ..tokens.limits_narrow import check_not_looser, over_budget
from ..tokens.scopes import ScopeSet
from .policy_principals import Caller, Principal, shown
from .policy_schema import AgentPolicy, human
from .policy_scopes import covered

if TYPE_CHECKING:
    from .slack_config import SlackConfig

__all__ = [
    "Grant",
    "Granting",
    "Policy",
    "PolicyRefusal",
    "RefusalReason",
    "asked_scopes",
    "check_ttl",
    "seconds_shown",
]

_Rules = TypeVar("_Rules")


def seconds_shown(seconds: int) -> str:
    """``7200s (2h)``: seconds, and the unit a human reads when there is one."""
    unit = human(seconds)
    return f"{seconds}s" if unit == f"{seconds}s" else f"{seconds}s ({unit})"


class RefusalReason(enum.Enum):
    """Why ``Policy.grant`` refused."""

    NOT_A_CALLER = "not_a_caller"  # also an unknown agent: the caller learns nothing more
    SCOPE = "scope"
    ASK = "ask"
    TTL = "ttl"
    AUDIENCE = "audience"
    LIMITS = "limits"


class PolicyRefusal(PermissionDeniedError):
    """A request beyond the policy; ``str(err)`` is the one-line reason, ``reason`` its kind."""

    def __init__(
        self,
        message: str,
        *,
        reason: RefusalReason,
        agent: str,
        scope: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(message, agent=agent, scope=scope, expected=expected, found=found)
        self.reason = reason

    @classmethod
    def not_a_caller(cls, caller: Caller, agent: str, why: str = "") -> PolicyRefusal:
        """``caller`` may not obtain ``agent``'s tokens (``why``, when it may be said)."""
        return cls(
            f"{caller} may not obtain tokens for agent {agent!r}{why}",
            reason=RefusalReason.NOT_A_CALLER,
            agent=agent,
            found=str(caller),
        )

    @classmethod
    def beyond(
        cls, agent: str, asked: str, allowed: str, reason: RefusalReason, expected: Any, found: Any
    ) -> PolicyRefusal:
        """``agent 'A' may not be granted ASKED; ALLOWED``: more than the policy allows."""
        message = f"agent {agent!r} may not be granted {asked}; {allowed}"
        scope = found if reason is RefusalReason.SCOPE else None
        return cls(message, reason=reason, agent=agent, scope=scope, expected=expected, found=found)


def asked_scopes(scopes: Sequence[str]) -> ScopeSet:
    """The scopes a request names, parsed: at least one.

    :raises InvalidScopeError: a scope outside the grammar, or none.
    """
    asked = ScopeSet.parse(scopes)
    if not asked.scopes:
        raise InvalidScopeError("expected at least one scope, found none", expected=">=1")
    return asked


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What the policy grants one request: the token's agent, scopes, TTL, audience, limits."""

    agent: str
    scopes: tuple[str, ...]
    ttl: int
    audience: str | tuple[str, ...]
    limits: Limits | None = None  # the policy's that apply to the scopes, then those asked


def check_ttl(ttl: object) -> None:
    """A TTL asked for is a positive whole number of seconds.

    :raises ConfigError: it is not.
    """
    if type(ttl) is not int or ttl <= 0:
        raise ConfigError(f"ttl: expected a positive number of seconds, found {shown(ttl)}")


class Granting(ABC, Generic[_Rules]):
    """How a broker's policy decides a token request: ``Policy``, and dev mode's ``DevPolicy``.

    ``grant`` runs the steps each policy fills in: the rules for this caller and
    agent (refusing a caller who may not obtain its tokens), then the scopes, the
    TTL and the audience, each within those rules.
    """

    def grant(
        self,
        caller: Caller,
        agent: str,
        *,
        scopes: Sequence[str] | None,
        ttl: int | None,
        audience: str | Sequence[str] | None,
        limits: Limits | None = None,
    ) -> Grant:
        """Decide a token request: what ``caller`` gets for ``agent``, or why not.

        ``limits`` are narrower limits the caller asks for, added to the policy's
        (every entry applies, so they can only narrow; one looser than the policy's
        on the same argument, or a budget above the policy's, is refused).

        ``scopes=None`` asks for every grantable scope, ``ttl=None`` for the
        default TTL (at most the agent's ``max_ttl``), ``audience=None`` for the
        agent's audiences. A caller that may not obtain the agent's tokens learns
        nothing about its policy (an unknown agent reads the same).

        :raises PolicyRefusal: the request is beyond the policy.
        :raises ConfigError: a malformed agent name, TTL or audience.
        :raises InvalidScopeError: a scope outside the grammar, or none.
        """
        rules = self._rules(caller, agent)
        granted = self._scopes(agent, rules, scopes)
        return Grant(
            agent,
            granted,
            self._ttl(agent, rules, ttl),
            self._audience(agent, rules, audience),
            self._limits(agent, rules, ScopeSet(granted), limits),
        )

    def _limits(
        self, agent: str, rules: _Rules, granted: ScopeSet, asked: Limits | None
    ) -> Limits | None:
        """The token's limits: the policy's that may apply to ``granted``, then ``asked``."""
        held = self._policy_limits(agent, rules)
        applying = [entry for entry in held or () if concerns(entry.scope, granted)]
        if asked is None:
            return Limits(applying) if applying else None
        for entry in asked:
            if not concerns(entry.scope, granted):
                raise PolicyRefusal(
                    f"agent {agent!r}: the limit on {entry.scope} applies to none of the "
                    f"token's scopes ({granted.claim()})",
                    reason=RefusalReason.LIMITS,
                    agent=agent,
                    found=entry.scope,
                )
        problem = check_not_looser(asked, applying, whose="its policy's") or over_budget(
            asked, applying, whose="its policy's"
        )
        if problem is not None:
            raise PolicyRefusal(
                f"agent {agent!r}: {problem}", reason=RefusalReason.LIMITS, agent=agent
            )
        return Limits([*applying, *asked])  # InvalidLimitError: too many

    def _policy_limits(self, agent: str, rules: _Rules) -> Limits | None:
        """The limits the policy sets for ``agent`` (none by default)."""
        return None

    @abstractmethod
    def is_admin(self, caller: Caller) -> bool:
        """True when ``caller`` may approve, deny and revoke."""

    @abstractmethod
    def needs_human(self, agent: str, scope: str) -> bool:
        """True when a human grants ``scope`` to ``agent`` one call at a time."""

    @abstractmethod
    def _rules(self, caller: Caller, agent: str) -> _Rules:
        """What applies to ``agent``'s tokens; refuses a caller who may not obtain them."""

    @abstractmethod
    def _scopes(self, agent: str, rules: _Rules, scopes: Sequence[str] | None) -> tuple[str, ...]:
        """The scopes granted."""

    @abstractmethod
    def _ttl(self, agent: str, rules: _Rules, ttl: int | None) -> int:
        """The TTL granted."""

    @abstractmethod
    def _audience(
        self, agent: str, rules: _Rules, audience: str | Sequence[str] | None
    ) -> str | tuple[str, ...]:
        """The audience granted: one name or several."""


@dataclass(frozen=True)
class Policy(Granting[AgentPolicy]):
    """A validated policy: admins, agents, and the decisions drawn from them.

    Build one with ``load_policy`` or ``parse_policy``. ``warnings`` are lines
    worth showing (an agent nobody may obtain), never reasons to refuse.
    """

    admins: tuple[Principal, ...]
    agents: Mapping[str, AgentPolicy]
    default_ttl: int = DEFAULT_TTL
    warnings: tuple[str, ...] = ()
    notify: str | None = field(default=None, repr=False)  # a webhook for elevation requests
    slack: SlackConfig | None = field(default=None, repr=False)  # [slack]: broker.slack_config
    forwarders: tuple[Principal, ...] = ()  # who may forward decisions to the console's feed
    _grantable: Mapping[str, frozenset[tuple[str, ...]]] = field(
        init=False, repr=False, compare=False
    )
    _agent_limits: Mapping[str, Limits | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", MappingProxyType(dict(self.agents)))
        grantable = {
            name: frozenset(tuple(scope.split(":")) for scope in rules.scopes)
            for name, rules in self.agents.items()
        }
        object.__setattr__(self, "_grantable", MappingProxyType(grantable))
        parsed = {name: rules.limits_of() for name, rules in self.agents.items()}
        object.__setattr__(self, "_agent_limits", MappingProxyType(parsed))

    def is_admin(self, caller: Caller) -> bool:
        """True when ``caller`` may approve, deny and revoke."""
        return any(admin.matches(caller) for admin in self.admins)

    def needs_human(self, agent: str, scope: str) -> bool:
        """True when ``scope`` is one of ``agent``'s ``ask`` scopes (a human grants each call)."""
        rules = self.agents.get(agent)
        return rules is not None and scope in rules.ask

    def _rules(self, caller: Caller, agent: str) -> AgentPolicy:
        if not is_agent_name(agent):
            raise ConfigError(f"agent: expected an agent name, found {shown(agent)}")
        rules = self.agents.get(agent)
        if rules is None or not any(principal.matches(caller) for principal in rules.callers):
            raise PolicyRefusal.not_a_caller(caller, agent)
        return rules

    def _scopes(
        self, agent: str, rules: AgentPolicy, scopes: Sequence[str] | None
    ) -> tuple[str, ...]:
        if scopes is None:
            return rules.scopes
        asked = asked_scopes(scopes)
        grantable = self._grantable[agent]
        for scope in asked:
            if scope in rules.ask:
                raise PolicyRefusal(
                    f"agent {agent!r}: {scope!r} is granted one call at a time by a human "
                    "(ask), never in a token",
                    reason=RefusalReason.ASK,
                    agent=agent,
                    scope=scope,
                )
            if not covered(tuple(scope.split(":")), grantable):
                grants = f"its policy grants {' '.join(rules.scopes)}"
                raise PolicyRefusal.beyond(
                    agent, repr(scope), grants, RefusalReason.SCOPE, rules.scopes, scope
                )
        return asked.scopes

    def _policy_limits(self, agent: str, rules: AgentPolicy) -> Limits | None:
        return self._agent_limits.get(agent)

    def _ttl(self, agent: str, rules: AgentPolicy, ttl: int | None) -> int:
        if ttl is None:
            return min(self.default_ttl, rules.max_ttl)
        check_ttl(ttl)
        if ttl > rules.max_ttl:
            limit = f"its policy's max_ttl is {seconds_shown(rules.max_ttl)}"
            asked = f"a TTL of {seconds_shown(ttl)}"
            raise PolicyRefusal.beyond(agent, asked, limit, RefusalReason.TTL, rules.max_ttl, ttl)
        return ttl

    def _audience(
        self, agent: str, rules: AgentPolicy, audience: str | Sequence[str] | None
    ) -> str | tuple[str, ...]:
        if audience is None:
            chosen = rules.audiences
        else:
            items = (audience,) if isinstance(audience, str) else tuple(audience)
            if not items or not all(isinstance(item, str) for item in items):
                raise ConfigError(
                    f"audience: expected a name or a list of names, found {shown(audience)}"
                )
            for item in items:
                if item not in rules.audiences:
                    allowed = ", ".join(shown(name) for name in rules.audiences)
                    raise PolicyRefusal.beyond(
                        agent,
                        f"audience {shown(item)}",
                        f"its policy allows {allowed}",
                        RefusalReason.AUDIENCE,
                        rules.audiences,
                        item,
                    )
            chosen = tuple(dict.fromkeys(items))
        return chosen[0] if len(chosen) == 1 else chosen

"""The laptop's policy: what dev mode grants today, served by a broker, so the same code runs.

    agentsudo serve --dev          # a broker for this user, socket in the key directory

Dev mode has no policy file: whoever can read the key directory can mint any
token. ``DevPolicy`` grants exactly that through the broker, and no more: the
broker's own user may obtain any agent's tokens with the scopes it names, up
to the maximum TTL, and is its admin; nobody else gets anything. Code written
against a broker (``AGENTSUDO_BROKER``) then runs unchanged against the real
one, whose policy is a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError, InvalidScopeError
from ..tokens.claims import MAX_AUDIENCES, check_agent_name
from ..tokens.scopes import ScopeSet
from .policy import Caller, Grant, PolicyRefusal, RefusalReason

__all__ = ["DevPolicy"]


@dataclass(frozen=True)
class DevPolicy:
    """Any agent, the scopes asked for, for one user (the broker's own)."""

    uid: int
    max_ttl: int
    default_ttl: int
    audience: str
    warnings: tuple[str, ...] = ()

    def is_admin(self, caller: Caller) -> bool:
        """The broker's own user, as dev mode's owner of the key directory."""
        return caller.uid == self.uid

    def needs_human(self, agent: str, scope: str) -> bool:
        """Nothing is kept for a human in dev mode."""
        return False

    def grant(
        self,
        caller: Caller,
        agent: str,
        *,
        scopes: Sequence[str] | None,
        ttl: int | None,
        audience: str | Sequence[str] | None,
    ) -> Grant:
        """What ``agentsudo issue`` with the key directory would mint, for the owner only.

        :raises PolicyRefusal: another user, or a TTL over the maximum.
        :raises ConfigError: a bad agent name, TTL or audience; no scopes named.
        :raises InvalidScopeError: a scope outside the grammar.
        """
        check_agent_name(agent, "agent")
        if caller.uid != self.uid:
            raise PolicyRefusal(
                f"{caller} may not obtain tokens for agent {agent!r} (a dev-mode broker serves "
                f"only uid {self.uid})",
                reason=RefusalReason.NOT_A_CALLER,
                agent=agent,
                found=str(caller),
            )
        if scopes is None:
            raise ConfigError(
                "scopes: a dev-mode broker has no policy to take them from: name them"
            )
        granted = ScopeSet.parse(scopes)
        if not granted.scopes:
            raise InvalidScopeError("expected at least one scope, found none", expected=">=1")
        lifetime = min(self.default_ttl, self.max_ttl) if ttl is None else ttl
        if lifetime > self.max_ttl:
            raise PolicyRefusal(
                f"agent {agent!r} may not be granted a TTL of {lifetime}s; the maximum is "
                f"{self.max_ttl}s",
                reason=RefusalReason.TTL,
                agent=agent,
                expected=self.max_ttl,
                found=lifetime,
            )
        if audience is None:
            return Grant(agent, granted.scopes, lifetime, self.audience)
        names = (audience,) if isinstance(audience, str) else tuple(audience)
        if not 1 <= len(names) <= MAX_AUDIENCES:
            raise ConfigError(f"audience: expected 1 to {MAX_AUDIENCES}, found {len(names)}")
        return Grant(agent, granted.scopes, lifetime, names[0] if len(names) == 1 else names)

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

from ..errors import ConfigError
from ..tokens.claims import MAX_AUDIENCES, check_agent_name
from .policy_grant import (
    Granting,
    PolicyRefusal,
    RefusalReason,
    asked_scopes,
    check_ttl,
    seconds_shown,
)
from .policy_principals import Caller

__all__ = ["DevPolicy"]


@dataclass(frozen=True)
class DevPolicy(Granting[None]):
    """Any agent, the scopes asked for, for one user (the broker's own).

    ``grant`` gives what ``agentsudo issue`` with the key directory would mint, to
    that user only: a ``PolicyRefusal`` for another user or a TTL over the maximum;
    a ``ConfigError`` for a bad agent name or audience, or no scopes named.
    """

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

    def _rules(self, caller: Caller, agent: str) -> None:
        check_agent_name(agent, "agent")
        if caller.uid != self.uid:
            why = f" (a dev-mode broker serves only uid {self.uid})"
            raise PolicyRefusal.not_a_caller(caller, agent, why)

    def _scopes(self, agent: str, rules: None, scopes: Sequence[str] | None) -> tuple[str, ...]:
        if scopes is None:
            raise ConfigError(
                "scopes: a dev-mode broker has no policy to take them from: name them"
            )
        return asked_scopes(scopes).scopes

    def _ttl(self, agent: str, rules: None, ttl: int | None) -> int:
        if ttl is not None:
            check_ttl(ttl)
        lifetime = min(self.default_ttl, self.max_ttl) if ttl is None else ttl
        if lifetime > self.max_ttl:
            asked = f"a TTL of {seconds_shown(lifetime)}"
            limit = f"the maximum is {seconds_shown(self.max_ttl)}"
            raise PolicyRefusal.beyond(
                agent, asked, limit, RefusalReason.TTL, self.max_ttl, lifetime
            )
        return lifetime

    def _audience(
        self, agent: str, rules: None, audience: str | Sequence[str] | None
    ) -> str | tuple[str, ...]:
        if audience is None:
            return self.audience
        names = (audience,) if isinstance(audience, str) else tuple(audience)
        if not 1 <= len(names) <= MAX_AUDIENCES:
            raise ConfigError(f"audience: expected 1 to {MAX_AUDIENCES}, found {len(names)}")
        return names[0] if len(names) == 1 else names

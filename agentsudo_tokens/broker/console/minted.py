"""A record of the tokens the broker minted, kept in the store until each expires.

    record_minted(store, minted.claims)         # at issuance, before the token is handed out
    live_tokens(store)                          # {agent: [MintedToken, ...]}, newest first

One entry a token, ``minted:<jti>`` (agent, scopes, ``iat``, ``exp``), expiring with the
token: the record is bounded by what the broker may issue (rate-limited per caller) over
a token's lifetime. ``live_tokens`` leaves out those revoked by ``jti`` or by the agent's
kill switch, and shows at most ``MAX_SHOWN`` a agent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...tokens.revocation import AGENT, REVOKED

if TYPE_CHECKING:
    from ...state import Store

__all__ = ["MAX_SHOWN", "MintedToken", "kill_switches", "live_tokens", "record_minted"]

MINTED = "minted:"
MAX_SHOWN = 200  # live tokens listed per agent, newest first
_MAX_SCOPES = 64


@dataclass(frozen=True)
class MintedToken:
    """A token the broker minted: its ``jti``, agent, scopes and lifetime (never the token)."""

    jti: str
    agent: str
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int


def record_minted(store: Store, claims: Mapping[str, Any]) -> None:
    """Keep ``jti``, agent, scopes, ``iat`` and ``exp`` of a token just minted.

    :raises StoreUnavailableError: the store cannot be written.
    """
    jti, exp = claims.get("jti"), claims.get("exp")
    if not isinstance(jti, str) or type(exp) is not int:
        return  # our issuer always sets both; a record of nothing is no record
    scope = claims.get("scope")
    record = {
        "agent": claims.get("sub"),
        "scopes": scope.split() if isinstance(scope, str) else [],
        "iat": claims.get("iat"),
        "exp": exp,
    }
    store.put(MINTED + jti, json.dumps(record), expires_at=exp)


def _parsed(jti: str, raw: str) -> MintedToken | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    agent, scopes, iat, exp = (data.get(k) for k in ("agent", "scopes", "iat", "exp"))
    if (
        not isinstance(agent, str)
        or not isinstance(scopes, list)
        or not all(isinstance(s, str) for s in scopes)
        or type(iat) is not int
        or type(exp) is not int
    ):
        return None
    return MintedToken(jti, agent, tuple(scopes[:_MAX_SCOPES]), iat, exp)


def _cutoff(raw: str | None) -> float | None:
    """An agent's kill switch: tokens issued until then are refused (unreadable: all)."""
    if raw is None:
        return None
    try:
        before = json.loads(raw)["before"]
    except (ValueError, TypeError, KeyError):
        return float("inf")
    return float(before) if type(before) is int else float("inf")


def live_tokens(store: Store, *, now: float | None = None) -> dict[str, list[MintedToken]]:
    """Tokens minted and neither expired nor revoked, by agent, newest first.

    :raises StoreUnavailableError: the store cannot be reached.
    """
    moment = time.time() if now is None else now
    found = [
        token
        for key, raw in store.items(MINTED).items()
        if (token := _parsed(key[len(MINTED) :], raw)) is not None and token.expires_at > moment
    ]
    if not found:
        return {}
    agents = sorted({token.agent for token in found})
    marks = store.get_many([REVOKED + token.jti for token in found])
    cutoffs = dict(zip(agents, store.get_many([AGENT + a for a in agents]), strict=True))
    live: dict[str, list[MintedToken]] = {}
    for token, revoked in zip(found, marks, strict=True):
        cutoff = _cutoff(cutoffs[token.agent])
        if revoked is not None or (cutoff is not None and token.issued_at <= cutoff):
            continue
        live.setdefault(token.agent, []).append(token)
    for tokens in live.values():
        tokens.sort(key=lambda t: (-t.issued_at, t.jti))
        del tokens[MAX_SHOWN:]
    return live


def kill_switches(store: Store, agents: list[str]) -> dict[str, float | None]:
    """Each agent's kill switch: until when its tokens are refused (``inf``: unreadable, all).

    :raises StoreUnavailableError: the store cannot be reached.
    """
    if not agents:
        return {}
    found = store.get_many([AGENT + agent for agent in agents])
    return {agent: _cutoff(raw) for agent, raw in zip(agents, found, strict=True)}

"""Revocation: refuse a token by its ``jti``, or every token of an agent issued until now.

    store = open_store("redis://10.0.0.5:6379/0")
    revoke(store, claims.jti, reason="leaked in a log")
    revoke_agent(store, "SupportBot")                    # the kill switch
    Verifier(keys, store=store).verify(token)            # RevokedTokenError

Only a verifier given the store sees revocations; without one, verification
stays offline and a token is good until it expires. Each entry is kept as
long as a token it concerns can still verify, then expires:

- by whole token: until its verified ``exp`` plus the largest leeway
  (``MAX_LEEWAY``), or, unverified, as long as by ``jti`` alone;
- by ``jti`` alone: a token naming it was issued at most the leeway in the
  future and lives at most ``max_ttl``, and verifiers accept it a leeway past
  its ``exp``; so until now + ``max_ttl`` + 2 × ``MAX_LEEWAY``. This holds for
  every verifier whose ``AGENTSUDO_MAX_TTL`` is not above the revoker's;
- by agent: every token issued until now plus ``leeway`` (an issuer whose
  clock runs ahead), kept until that cut-off + ``max_ttl`` + ``MAX_LEEWAY``.

``check_token`` is what a verifier runs: one read for the token's ``jti``,
its agent and its one-time mark, then, for a one-time token, one atomic claim.
A delegated token (``tokens.delegation``) is also refused, in the same read,
when the ``jti`` of any token it was exchanged from is revoked, or any agent
of its chain is killed: revoking a token revokes its whole subtree, and no
list of descendants is kept.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..config import DEFAULT_LEEWAY, DEFAULT_MAX_TTL, MAX_LEEWAY
from ..errors import ConfigError, RevokedTokenError
from ..state.onetime import ONCE, USED
from .claims import MAX_NAME

if TYPE_CHECKING:
    from ..state import Store
    from .claims import VerifiedClaims

__all__ = [
    "Revocation",
    "agent_cutoff",
    "check_revoked",
    "check_token",
    "revoke",
    "revoke_agent",
    "revoke_token",
]

REVOKED = "revoked:"
AGENT = "agent-revoked:"
MAX_REASON = 200


@dataclass(frozen=True)
class Revocation:
    """What was revoked, when, why, and until when the store keeps the entry."""

    kind: Literal["token", "agent"]
    target: str  # the jti, or the agent's name
    reason: str | None
    revoked_at: int
    kept_until: int
    cutoff: int | None = None  # for an agent: tokens issued until then are refused


def iso_time(seconds: float) -> str:
    """Epoch seconds as ISO 8601 in UTC: ``2026-12-01T13:51:38Z``."""
    moment = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _checked(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME or not value.isprintable():
        raise ConfigError(
            f"{what}: expected a printable string of 1 to {MAX_NAME} characters, found {value!r}",
            expected=what,
            found=value,
        )
    return value


def _reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    return " ".join(str(reason).split())[:MAX_REASON] or None


def revoke(
    store: Store,
    jti: str,
    *,
    reason: str | None = None,
    expires_at: int | None = None,
    max_ttl: int = DEFAULT_MAX_TTL,
    now: float | None = None,
) -> Revocation:
    """Revoke the token with this ``jti``.

    :param expires_at: the token's ``exp``, when known: the entry is kept until then
        (plus ``MAX_LEEWAY``). Otherwise for as long as any token naming this ``jti``
        could verify: ``max_ttl`` + 2 × ``MAX_LEEWAY`` from now (see the module docs).
    :raises ConfigError: not a ``jti``.
    :raises StoreUnavailableError: the store cannot be reached.
    """
    jti = _checked(jti, "jti")
    issued = int(time.time() if now is None else now)
    latest_exp = issued + MAX_LEEWAY + max_ttl  # issued up to a leeway ahead, living max_ttl
    last = latest_exp if expires_at is None else min(int(expires_at), latest_exp)
    kept_until = last + MAX_LEEWAY
    why = _reason(reason)
    store.put(REVOKED + jti, json.dumps({"at": issued, "reason": why}), expires_at=kept_until)
    return Revocation("token", jti, why, issued, kept_until)


def revoke_token(
    store: Store,
    token: str,
    *,
    reason: str | None = None,
    expires_at: int | None = None,
    max_ttl: int = DEFAULT_MAX_TTL,
    now: float | None = None,
) -> Revocation:
    """Revoke a token given whole: its ``jti`` is read WITHOUT verifying it.

    Revoking is always safe, even for a forged token: it only refuses a ``jti``.
    The token's own ``exp`` is not trusted (a copy with ``exp`` edited into the
    past would make the entry expire at once): the entry is kept as long as for
    a ``jti`` alone. Give ``expires_at`` when you verified the token yourself.

    :param expires_at: the token's verified ``exp``.
    :raises MalformedTokenError: the token cannot be decoded.
    :raises ConfigError: the token has no usable ``jti``.
    :raises StoreUnavailableError: the store cannot be reached.
    """
    from .jws import decode_json_part, split

    claims = decode_json_part(split(token).payload, "payload")  # unverified, as documented
    return revoke(
        store,
        _checked(claims.get("jti"), "jti"),
        reason=reason,
        expires_at=expires_at,
        max_ttl=max_ttl,
        now=now,
    )


def revoke_agent(
    store: Store,
    agent: str,
    *,
    reason: str | None = None,
    max_ttl: int = DEFAULT_MAX_TTL,
    leeway: int = DEFAULT_LEEWAY,
    now: float | None = None,
) -> Revocation:
    """Revoke every token of ``agent`` issued until now, a kill switch.

    The cut-off is now plus ``leeway``: a token from an issuer whose clock runs
    that far ahead is covered too, and tokens minted for the agent verify again
    once the cut-off has passed. The entry is kept until the cut-off plus
    ``max_ttl`` (plus the largest leeway), by when every earlier token has
    expired anyway.

    :raises ConfigError: not an agent name.
    :raises StoreUnavailableError: the store cannot be reached.
    """
    agent = _checked(agent, "agent")
    at = int(time.time() if now is None else now)
    before = at + max(0, min(int(leeway), MAX_LEEWAY))
    kept_until = before + max_ttl + MAX_LEEWAY
    why = _reason(reason)
    entry = json.dumps({"before": before, "at": at, "reason": why})
    store.put(AGENT + agent, entry, expires_at=kept_until)
    return Revocation("agent", agent, why, at, kept_until, before)


def agent_cutoff(store: Store, agent: str) -> float | None:
    """Until when every token of ``agent`` is refused (a kill switch), or ``None``.

    An entry that cannot be read counts as refusing everything (``inf``): fail closed.

    :raises StoreUnavailableError: the store cannot be reached.
    """
    entry = store.get(AGENT + agent)
    if entry is None:
        return None
    before = _agent_cutoff(entry)
    return float("inf") if before is None else float(before)


def _agent_cutoff(entry: str) -> int | None:
    try:
        before = json.loads(entry)["before"]
    except (ValueError, TypeError, KeyError):
        return None
    return before if type(before) is int else None


def _revoked(message: str, found: object) -> RevokedTokenError:
    return RevokedTokenError(message, expected="a token not revoked", found=found)


def check_revoked(store: Store, claims: VerifiedClaims) -> None:
    """Refuse a token revoked by ``jti`` or by agent; consume nothing.

    :raises RevokedTokenError: revoked by ``jti`` or by agent.
    :raises StoreUnavailableError: the store cannot be reached (fail closed).
    """
    chain = _chain_keys(claims)
    revoked, agent, *found = store.get_many((REVOKED + claims.jti, AGENT + claims.subject, *chain))
    _refuse_revoked(claims, revoked, agent)
    if chain:
        _refuse_chain(claims, found)


def _refuse_revoked(claims: VerifiedClaims, revoked: str | None, agent: str | None) -> None:
    if revoked is not None:
        raise _revoked(f"token {claims.jti!r} was revoked", "revoked jti")
    if agent is not None:
        before = _agent_cutoff(agent)
        if before is None:  # an unreadable entry revokes: fail closed
            raise _revoked(f"every token of agent {claims.subject!r} was revoked", "revoked agent")
        if claims.issued_at <= before:
            raise _revoked(
                f"every token of agent {claims.subject!r} issued until {iso_time(before)} was "
                f"revoked; this one was issued at {iso_time(claims.issued_at)}",
                "revoked agent",
            )


def _chain_actors(claims: VerifiedClaims) -> tuple[str, ...]:
    chain = claims.delegation
    if chain is None:
        return ()
    return tuple(dict.fromkeys(name for name in chain.actors if name != claims.subject))


def _chain_keys(claims: VerifiedClaims) -> tuple[str, ...]:
    """The store keys a delegated token's chain adds: its ancestors' jtis, its actors' kill
    switches (none for a token minted directly)."""
    chain = claims.delegation
    if chain is None:
        return ()
    ancestors = (REVOKED + jti for jti in chain.ancestors)
    return (*ancestors, *(AGENT + name for name in _chain_actors(claims)))


def _refuse_chain(claims: VerifiedClaims, found: list[str | None]) -> None:
    """A delegated token dies with any token it came from, and with any agent in its chain:
    the descendants of a revoked token are never listed anywhere."""
    chain = claims.delegation
    assert chain is not None
    for jti, entry in zip(chain.ancestors, found, strict=False):
        if entry is not None:
            raise _revoked(
                f"token {jti!r}, an ancestor of token {claims.jti!r} in its delegation chain, "
                "was revoked",
                "revoked ancestor",
            )
    actors = _chain_actors(claims)
    for name, entry in zip(actors, found[len(chain.ancestors) :], strict=True):
        if entry is None:
            continue
        before = _agent_cutoff(entry)
        if before is None or claims.issued_at <= before:
            until = "now" if before is None else iso_time(before)
            raise _revoked(
                f"every token of agent {name!r} (in this token's delegation chain) issued "
                f"until {until} was revoked",
                "revoked agent in chain",
            )


def check_token(store: Store, claims: VerifiedClaims) -> None:
    """Refuse a revoked token, and consume a one-time token (first use only).

    Run after every other check has passed: a refused token never consumes.

    :raises RevokedTokenError: revoked by ``jti``, by agent, or a one-time token used before.
    :raises StoreUnavailableError: the store cannot be reached (fail closed).
    """
    jti = claims.jti
    chain = _chain_keys(claims)
    keys = (REVOKED + jti, AGENT + claims.subject, ONCE + jti, *chain)
    revoked, agent, once, *found = store.get_many(keys)
    _refuse_revoked(claims, revoked, agent)
    if chain:
        _refuse_chain(claims, found)
    if once is not None or claims.single_use:
        used = store.add(
            USED + jti, str(int(time.time())), expires_at=claims.expires_at + MAX_LEEWAY
        )
        if not used:
            raise _revoked(f"one-time token {jti!r} was already used", "used one-time token")

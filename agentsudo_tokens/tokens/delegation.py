"""Delegation chains: the ``act`` claim (RFC 8693 §4.1), the ancestors' ``jti``s, narrowing.

    chain = parse_delegation(payload, is_name=is_agent_name)   # None: minted directly
    chain.actors, chain.ancestors              # ("Summarizer",), ("<the parent's jti>",)
    narrowed = narrow(parent, actor="Summarizer", scopes=ScopeSet(["read:orders"]), ttl=300,
                      audience=None, now=int(time.time()), default_ttl=900, max_depth=2,
                      delegable=ScopeSet(["read:*"]))

A token minted by exchange (``broker.exchange``) says, besides the usual claims::

    "sub": "Orchestrator",                       # on whose behalf: the root agent
    "act": {"sub": "Helper",                     # the current actor (the outermost act)
            "act": {"sub": "Summarizer"}},       # earlier actors, nested (RFC 8693 §4.1)
    "ancestors": ["<root jti>", "<Summarizer's token's jti>"]

``sub`` stays the party on whose behalf the chain acts, as RFC 8693 §4.1 says,
so a service that knows nothing of ``act`` sees the root agent with narrower
scopes. The agent that acts (``VerifiedClaims.agent``, ``Agent.name``, the
audit's ``agent``) is the outermost ``act.sub``; the chain reads
``(sub, earliest actor, ..., current actor)``.

``ancestors`` holds the ``jti`` of every token the chain was exchanged from,
root first, parent last: one per ``act`` level. No registered claim carries
them (claims inside ``act`` are about the actor's identity only, RFC 8693
§4.1), so it is a top-level claim of its own. A verifier refuses the token
when any of them is revoked: revoking one token takes down its whole subtree
with no list of descendants anywhere. ``act`` and ``ancestors`` come together
or not at all, in equal numbers; anything else is a malformed token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import DelegationRefusedError, ExpiredTokenError, MalformedTokenError
from .limits import Limits
from .limits_narrow import Carve, narrow_limits
from .scopes import ScopeSet, covered

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ACT_CLAIM",
    "ANCESTORS_CLAIM",
    "GRANT_TYPE",
    "JWT_TOKEN_TYPE",
    "MAX_DEPTH",
    "Delegation",
    "Narrowed",
    "act_claim",
    "narrow",
    "parse_delegation",
    "scope_outside",
]

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693 §2.1
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # RFC 8693 §3
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # RFC 8693 §3
ACT_CLAIM = "act"
ANCESTORS_CLAIM = "ancestors"
MAX_DEPTH = 8  # act levels a verifier accepts at most; a policy may allow fewer
_MAX_JTI = 256
_ACT_MEMBERS = frozenset({"sub", "act"})
_END = object()  # below the innermost act


@dataclass(frozen=True)
class Delegation:
    """A verified token's chain: its actors and the ``jti``s of the tokens it came from.

    ``actors`` runs from the earliest actor to the current one (the reverse of the
    ``act`` nesting); ``ancestors`` from the root token's ``jti`` to the parent's.
    """

    actors: tuple[str, ...]
    ancestors: tuple[str, ...]

    @property
    def actor(self) -> str:
        """The agent acting now: the outermost ``act.sub``."""
        return self.actors[-1]

    @property
    def depth(self) -> int:
        """How many exchanges away from a token minted directly (1 for a child)."""
        return len(self.actors)


def _malformed(message: str, found: object = None) -> MalformedTokenError:
    return MalformedTokenError(f"claim 'act': {message}", expected="RFC 8693 act", found=found)


def parse_delegation(
    claims: Mapping[str, Any], *, is_name: Callable[[object], bool]
) -> Delegation | None:
    """The chain of a token's claims, checked strictly; ``None`` without ``act``/``ancestors``.

    :param is_name: the agent-name rule (``claims.is_agent_name``, which imports this module).

    :raises MalformedTokenError: one without the other, an ``act`` that is not nested
        objects of exactly ``sub`` (an agent name) and ``act``, deeper than ``MAX_DEPTH``,
        or ``ancestors`` that is not a list of distinct ``jti``s, one per level.
    """
    act = claims.get(ACT_CLAIM)
    ancestors = claims.get(ANCESTORS_CLAIM)
    if act is None and ancestors is None:
        return None
    if act is None or ancestors is None:
        missing = ACT_CLAIM if act is None else ANCESTORS_CLAIM
        raise _malformed(f"act and ancestors come together; {missing!r} is missing", missing)
    actors: list[str] = []
    level: object = act
    while level is not _END:
        if type(level) is not dict:
            raise _malformed(f"expected an object, found {type(level).__name__}")
        name = level.get("sub")
        if len(level) != (1 if "act" not in level else 2) or name is None:
            extra = sorted(set(level) - _ACT_MEMBERS)
            raise _malformed("expected exactly 'sub' and, for an earlier actor, 'act'", extra)
        if not is_name(name):
            raise _malformed("expected each actor's 'sub' to be an agent name")
        if len(actors) >= MAX_DEPTH:
            raise _malformed(f"expected at most {MAX_DEPTH} actors", ">" + str(MAX_DEPTH))
        actors.append(name)
        level = level.get("act", _END)
        if level is None:
            raise _malformed("expected an earlier actor as an object, found null")
    actors.reverse()
    if (
        type(ancestors) is not list
        or len(ancestors) != len(actors)
        or not all(type(j) is str and 0 < len(j) <= _MAX_JTI for j in ancestors)
        or len(set(ancestors)) != len(ancestors)
        or claims.get("jti") in ancestors
    ):
        raise MalformedTokenError(
            f"claim 'ancestors': expected {len(actors)} distinct jtis, one per act level",
            expected=len(actors),
            found=type(ancestors).__name__,
        )
    return Delegation(tuple(actors), tuple(ancestors))


def act_claim(actors: Sequence[str]) -> dict[str, Any]:
    """The nested ``act`` claim for ``actors`` (earliest first, current last)."""
    claim: dict[str, Any] | None = None
    for name in actors:
        claim = {"sub": name} if claim is None else {"sub": name, "act": claim}
    if claim is None:
        raise ValueError("act_claim needs at least one actor")
    return claim


def scope_outside(asked: ScopeSet, held: ScopeSet) -> str | None:
    """The first asked scope that could match something no held scope matches, else ``None``.

    Wildcard-aware: ``read:orders`` is within ``read:*``; ``read:*`` is not within
    ``read:orders``.
    """
    patterns = frozenset(tuple(scope.split(":")) for scope in held.scopes)
    for scope in asked.scopes:
        if not covered(tuple(scope.split(":")), patterns):
            return scope
    return None


class Parent(Protocol):
    """What narrowing reads of the parent token (a ``VerifiedClaims`` is one)."""

    @property
    def subject(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def jti(self) -> str: ...
    @property
    def audience(self) -> tuple[str, ...]: ...
    @property
    def expires_at(self) -> int: ...
    @property
    def scopes(self) -> ScopeSet: ...
    @property
    def delegation(self) -> Delegation | None: ...
    @property
    def limits(self) -> Limits | None: ...


@dataclass(frozen=True)
class Narrowed:
    """What the child token gets: every field within its parent's."""

    subject: str
    actors: tuple[str, ...]
    ancestors: tuple[str, ...]
    scopes: ScopeSet
    audience: tuple[str, ...]
    ttl: int
    issued_at: int
    limits: Limits | None = None  # the parent's that may apply, then those asked
    carves: tuple[Carve, ...] = ()  # the parent's budget entries to debit for the child

    @property
    def delegation(self) -> Delegation:
        return Delegation(self.actors, self.ancestors)

    @property
    def chain(self) -> tuple[str, ...]:
        """``(sub, earliest actor, ..., current actor)``."""
        return (self.subject, *self.actors)


def _refuse(reason: str, message: str, *, agent: str, **extra: Any) -> DelegationRefusedError:
    return DelegationRefusedError(message, reason=reason, agent=agent, **extra)


def narrow(
    parent: Parent,
    *,
    actor: str | None,
    scopes: ScopeSet | None,
    audience: Sequence[str] | None,
    ttl: int | None,
    now: int,
    default_ttl: int,
    max_depth: int,
    delegable: ScopeSet,
    limits: Limits | None = None,
) -> Narrowed:
    """Decide the child of ``parent``: each field within the parent's, or a refusal.

    :param actor: the sub-agent's name (checked by the caller); ``None``: the parent's own
        agent (a narrowed copy).
    :param scopes: ``None``: the parent's scopes that ``delegable`` covers (those it holds
        but may not pass on are left out, not refused).
    :param audience: ``None``: the parent's audience.
    :param ttl: seconds; ``None``: ``default_ttl``, cut to what the parent has left.
    :param max_depth: how many exchanges from the root token the policy allows.
    :param delegable: the scopes the policy lets the root agent pass on.
    :param limits: narrower limits asked for the child, and its budgets
        (``tokens.limits_narrow``): added to the parent's that may apply.
    :raises DelegationRefusedError: beyond the parent or the policy (``reason`` says which;
        ``limits`` and ``budget`` for limits).
    :raises ExpiredTokenError: the parent has no whole second left.
    """
    held = parent.delegation
    acting = parent.agent
    left = parent.expires_at - now
    if left <= 0:
        raise ExpiredTokenError(
            "the parent token has expired: nothing is left to delegate",
            expected=f"exp > {now}",
            found=parent.expires_at,
        )
    name = acting if actor is None else actor  # an agent name: the caller checked it
    depth = (held.depth if held else 0) + 1
    if depth > min(max_depth, MAX_DEPTH):
        raise _refuse(
            "depth",
            f"agent {acting!r} may not delegate further: the chain would be {depth} deep, "
            f"the policy allows {max_depth}",
            agent=acting,
            expected=max_depth,
            found=depth,
        )
    if scopes is None:  # the parent's scopes that may be passed on whole
        given = [
            scope for scope in parent.scopes.scopes
            if scope_outside(ScopeSet([scope]), delegable) is None
        ]  # fmt: skip
        if not given:
            raise _refuse(
                "not_delegable",
                f"none of the parent token's scopes may be passed on whole: name those to pass "
                f"on (the policy of agent {parent.subject!r} lets it delegate "
                f"{delegable.claim() or 'nothing'})",
                agent=acting,
                expected=delegable.scopes,
                found=parent.scopes.scopes,
            )
        asked = ScopeSet(given)
    else:
        asked = scopes
    if not asked.scopes:
        raise _refuse("scope", "expected at least one scope, found none", agent=acting)
    beyond = scope_outside(asked, parent.scopes)
    if beyond is not None:
        raise _refuse(
            "scope",
            f"scope {beyond!r} is not within the parent token's scopes ({parent.scopes.claim()})",
            agent=acting,
            scope=beyond,
            expected=parent.scopes.scopes,
            found=beyond,
        )
    kept = scope_outside(asked, delegable)
    if kept is not None:
        passable = delegable.claim() or "nothing"
        raise _refuse(
            "not_delegable",
            f"scope {kept!r} may not be passed on: the policy of agent {parent.subject!r} "
            f"lets it delegate {passable}",
            agent=acting,
            scope=kept,
            expected=delegable.scopes,
            found=kept,
        )
    wanted = parent.audience if audience is None else tuple(dict.fromkeys(audience))
    if not wanted:
        raise _refuse("audience", "expected at least one audience, found none", agent=acting)
    for item in wanted:
        if item not in parent.audience:
            raise _refuse(
                "audience",
                f"audience {item!r:.60} is not within the parent token's "
                f"({', '.join(map(repr, parent.audience))})",
                agent=acting,
                expected=parent.audience,
                found=item,
            )
    if ttl is None:
        lifetime = min(default_ttl, left)
    elif type(ttl) is not int or ttl <= 0:
        raise _refuse("ttl", f"ttl: expected a positive number of seconds, found {ttl!r:.40}",
                      agent=acting)  # fmt: skip
    elif ttl > left:
        raise _refuse(
            "ttl",
            f"a TTL of {ttl}s would outlive the parent token, which expires in {left}s",
            agent=acting,
            expected=left,
            found=ttl,
        )
    else:
        lifetime = ttl
    carried = narrow_limits(parent.limits, asked, limits, agent=acting)
    ancestors = (*(held.ancestors if held else ()), parent.jti)
    actors = (*(held.actors if held else ()), name)
    return Narrowed(
        parent.subject, actors, ancestors, asked, wanted, lifetime, now,
        carried.limits, carried.carves,
    )  # fmt: skip

"""Token header and claims: what is required, and what a verified token says.

    claims = verifier.verify(token)      # VerifiedClaims
    claims.subject, claims.scopes.allows("read:orders"), claims.jti

``VerifiedClaims`` only comes out of a verifier. ``UnverifiedClaims`` comes out
of ``decode_unverified`` (for ``agentsudo inspect``) and no guard accepts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import (
    ConfigError,
    ExpiredTokenError,
    InvalidLimitError,
    InvalidScopeError,
    MalformedTokenError,
    NotYetValidTokenError,
    TokenLifetimeError,
    WrongAudienceError,
    WrongIssuerError,
)
from .delegation import Delegation, parse_delegation
from .limits import LIMITS_CLAIM, Limits
from .scopes import ScopeSet, parse_scope_claim

__all__ = [
    "AGENT_NAME_GRAMMAR",
    "CONFIRMATION_CLAIM",
    "HEADER_PARAMETERS",
    "MAX_TIME",
    "REQUIRED_CLAIMS",
    "TOKEN_TYPE",
    "UnverifiedClaims",
    "VerifiedClaims",
    "check_agent_name",
    "check_header",
    "check_claims",
    "is_agent_name",
]

TOKEN_TYPE = "at+jwt"
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4
HEADER_PARAMETERS = frozenset({"alg", "typ", "kid"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope")
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z
MAX_NAME = 256
MAX_AUDIENCES = 32
# An agent's name (``sub``): an identifier, not a display name. ASCII only, so two names
# that look alike are alike (no homoglyphs, no Unicode normalization forms), and nothing
# printed to a terminal can move the cursor, end a line or reorder text (ESC, newlines,
# bidi overrides, zero-width characters). No space: a name is one word in a table or a log.
AGENT_NAME_GRAMMAR = "1 to 128 ASCII letters, digits and _ . @ : - (first a letter or digit)"
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}").fullmatch
ONCE_CLAIM = "once"  # true: single-use; only a verifier with a state store may accept it
STATEFUL_CLAIMS = (ONCE_CLAIM,)  # claims a verifier without a store must refuse
CONFIRMATION_CLAIM = "cnf"  # RFC 7800: {"jkt": <RFC 7638 thumbprint>}, a DPoP-bound token
_JKT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]").fullmatch  # base64url SHA-256
_COMPILED_LIMIT = 1024
_COMPILED_SCOPES: dict[str, ScopeSet] = {}  # scope claim -> its compiled, immutable ScopeSet


def check_header(header: dict[str, Any]) -> tuple[str, str]:
    """Check the protected header; return ``(kid, alg)``.

    :raises MalformedTokenError: a parameter beyond ``alg``, ``typ``, ``kid``; a wrong ``typ``.
    """
    extra = sorted(set(header) - HEADER_PARAMETERS)
    if extra:
        raise MalformedTokenError(
            f"header: expected only alg, typ and kid, found {', '.join(map(repr, extra))}",
            expected=sorted(HEADER_PARAMETERS),
            found=extra,
        )
    missing = sorted(HEADER_PARAMETERS - set(header))
    if missing:
        raise MalformedTokenError(
            f"header: expected alg, typ and kid, missing {', '.join(missing)}",
            expected=sorted(HEADER_PARAMETERS),
            found=sorted(header),
        )
    alg, typ, kid = header["alg"], header["typ"], header["kid"]
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
        raise MalformedTokenError(
            f"header: expected typ {TOKEN_TYPE!r}, found {typ!r}", expected=TOKEN_TYPE, found=typ
        )
    if not isinstance(alg, str) or not alg:
        raise MalformedTokenError(f"header: expected alg as a string, found {alg!r}", found=alg)
    if not isinstance(kid, str) or not kid or len(kid) > 128:
        raise MalformedTokenError(
            "header: expected kid as a string of 1 to 128 characters",
            expected="kid",
            found=type(kid).__name__,
        )
    return kid, alg


def is_agent_name(value: object) -> bool:
    """True when ``value`` is a valid agent name (see ``AGENT_NAME_GRAMMAR``)."""
    return isinstance(value, str) and _AGENT_NAME(value) is not None


def _shown(value: object) -> str:
    """A hostile value as safe, short, one-line text for a message."""
    if not isinstance(value, str):
        return type(value).__name__
    return ascii(value[:40]) + ("..." if len(value) > 40 else "")


def check_agent_name(value: object, what: str = "agent name") -> str:
    """Return ``value`` when it is a valid agent name, for whoever mints or builds an agent.

    :raises ConfigError: it is not (the message states the grammar).
    """
    if isinstance(value, str) and _AGENT_NAME(value) is not None:
        return value
    raise ConfigError(
        f"{what}: expected {AGENT_NAME_GRAMMAR}, found {_shown(value)}",
        expected=AGENT_NAME_GRAMMAR,
        found=_shown(value),
    )


def _subject(claims: dict[str, Any]) -> str:
    value = claims["sub"]
    if not is_agent_name(value):
        raise MalformedTokenError(
            f"claim 'sub': expected an agent name ({AGENT_NAME_GRAMMAR}), found {_shown(value)}",
            expected=AGENT_NAME_GRAMMAR,
            found=_shown(value),
        )
    return value  # type: ignore[no-any-return]


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise MalformedTokenError(
            f"claim {name!r}: expected a non-empty string of at most {MAX_NAME} characters, "
            f"found {type(value).__name__}",
            expected="str",
            found=type(value).__name__,
        )
    return value


def _time(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int:
        raise MalformedTokenError(
            f"claim {name!r}: expected integer seconds, found {type(value).__name__}",
            expected="int",
            found=type(value).__name__,
        )
    if not 0 <= value <= MAX_TIME:
        raise MalformedTokenError(
            f"claim {name!r}: expected seconds between 0 and {MAX_TIME}, found {value}",
            expected=f"0..{MAX_TIME}",
            found=value,
        )
    return value


def _audience(claims: dict[str, Any]) -> tuple[str, ...]:
    value = claims["aud"]
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or not 1 <= len(items) <= MAX_AUDIENCES
        or not all(isinstance(item, str) and 0 < len(item) <= MAX_NAME for item in items)
    ):
        raise MalformedTokenError(
            f"claim 'aud': expected a string or a list of 1 to {MAX_AUDIENCES} strings",
            expected="str or list[str]",
            found=type(value).__name__,
        )
    return tuple(items)


def _confirmation(value: object) -> None:
    """``cnf`` must be ``{"jkt": <thumbprint>}``: a binding we cannot check is refused."""
    if not isinstance(value, dict) or set(value) != {"jkt"} or not isinstance(value["jkt"], str):
        members = sorted(map(_shown, value))[:5] if isinstance(value, dict) else _shown(value)
        raise MalformedTokenError(
            f"claim 'cnf': expected {{'jkt': <key thumbprint>}} only, found {members}",
            expected=["jkt"],
            found=members,
        )
    if _JKT(value["jkt"]) is None:
        raise MalformedTokenError(
            "claim 'cnf': expected jkt as a base64url SHA-256 thumbprint (43 characters)",
            expected="thumbprint",
            found=_shown(value["jkt"]),
        )


def _limits(value: object) -> Limits:
    """The token's limits; an entry we cannot enforce makes the token malformed (fail closed)."""
    try:
        return Limits.from_claim(value)
    except InvalidLimitError as exc:
        raise MalformedTokenError(
            f"claim {LIMITS_CLAIM!r}: {exc}", expected="agentsudo_limits entries", found=exc.found
        ) from None


def _scopes(claims: dict[str, Any]) -> ScopeSet:
    value = claims["scope"]
    if not isinstance(value, str):
        raise MalformedTokenError(
            f"claim 'scope': expected one space-separated string, found {type(value).__name__}",
            expected="str",
            found=type(value).__name__,
        )
    compiled = _COMPILED_SCOPES.get(value)
    if compiled is not None:
        return compiled
    try:
        compiled = ScopeSet(parse_scope_claim(value), _checked=True)
    except InvalidScopeError as exc:
        raise MalformedTokenError(
            f"claim 'scope': {exc}", expected=exc.expected, found=exc.found
        ) from exc
    if len(_COMPILED_SCOPES) < _COMPILED_LIMIT:
        _COMPILED_SCOPES[value] = compiled
    return compiled


@dataclass(frozen=True)
class VerifiedClaims:
    """The claims of a token whose signature, time window, issuer and audience all checked out."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    issued_at: int
    not_before: int
    expires_at: int
    jti: str
    scopes: ScopeSet
    kid: str
    alg: str
    claims: MappingProxyType[str, Any] = field(repr=False)
    delegation: Delegation | None = None  # act and ancestors (tokens.delegation)
    limits: Limits | None = None  # authorization_details: constraints and budgets (tokens.limits)

    @property
    def agent(self) -> str:
        """The agent acting: the current actor of a delegated token, else ``sub``."""
        return self.subject if self.delegation is None else self.delegation.actor

    @property
    def chain(self) -> tuple[str, ...]:
        """``(sub, earliest actor, ..., current actor)``; ``(sub,)`` for a token minted directly."""
        return (
            (self.subject,) if self.delegation is None else (self.subject, *self.delegation.actors)
        )

    @property
    def ttl(self) -> int:
        """The token's lifetime, ``exp - iat``."""
        return self.expires_at - self.issued_at

    @property
    def jkt(self) -> str | None:
        """The thumbprint of the key the token is bound to (``cnf.jkt``), or ``None``.

        A bound token is good only with a DPoP proof signed by that key (RFC 9449).
        """
        cnf = self.claims.get(CONFIRMATION_CLAIM)
        return None if cnf is None else cnf["jkt"]

    @property
    def single_use(self) -> bool:
        """True for a one-time token: only a verifier with a state store may accept it."""
        return self.claims.get(ONCE_CLAIM) is True


@dataclass(frozen=True)
class UnverifiedClaims:
    """A token's header and claims, decoded WITHOUT checking anything. No guard accepts it."""

    header: MappingProxyType[str, Any]
    claims: MappingProxyType[str, Any]
    verified: bool = False


def check_claims(
    claims: dict[str, Any],
    *,
    kid: str,
    alg: str,
    now: float,
    issuer: str,
    audience: str,
    leeway: int,
    max_ttl: int,
) -> VerifiedClaims:
    """Check required claims, their types and the time window; build ``VerifiedClaims``.

    :raises InvalidTokenError: the subclass naming the first failed check.
    """
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise MalformedTokenError(
            f"expected claims {', '.join(REQUIRED_CLAIMS)}, missing {', '.join(missing)}",
            expected=list(REQUIRED_CLAIMS),
            found=sorted(claims),
        )
    if CONFIRMATION_CLAIM in claims:
        _confirmation(claims[CONFIRMATION_CLAIM])
    for name in STATEFUL_CLAIMS:
        if name in claims and claims[name] is not True:
            raise MalformedTokenError(
                f"claim {name!r}: expected true when present, found {claims[name]!r}",
                expected=True,
                found=claims[name],
            )
    iss = _string(claims, "iss")
    sub = _subject(claims)
    jti = _string(claims, "jti")
    aud = _audience(claims)
    iat, nbf, exp = _time(claims, "iat"), _time(claims, "nbf"), _time(claims, "exp")
    scopes = _scopes(claims)
    delegation = parse_delegation(claims, is_name=is_agent_name)
    limits = _limits(claims[LIMITS_CLAIM]) if LIMITS_CLAIM in claims else None
    if iss != issuer:
        raise WrongIssuerError(
            f"expected issuer {issuer!r}, found {iss!r}", expected=issuer, found=iss
        )
    if audience not in aud:
        raise WrongAudienceError(
            f"expected audience {audience!r}, found {', '.join(map(repr, aud))}",
            expected=audience,
            found=aud,
        )
    lifetime = exp - iat
    if not 0 < lifetime <= max_ttl:
        raise TokenLifetimeError(
            f"expected a lifetime (exp - iat) of 1 to {max_ttl}s, found {lifetime}s",
            expected=max_ttl,
            found=lifetime,
        )
    if nbf > exp:
        raise MalformedTokenError(
            f"expected nbf at or before exp, found nbf {nbf - exp}s after exp",
            expected="nbf <= exp",
            found=nbf,
        )
    if now >= exp + leeway:
        raise ExpiredTokenError(
            f"expected a token valid now, found it expired {int(now - exp)}s ago",
            expected=f"exp > {int(now)}",
            found=exp,
        )
    if nbf > now + leeway:
        raise NotYetValidTokenError(
            f"expected a token valid now, found nbf {int(nbf - now)}s in the future",
            expected=f"nbf <= {int(now)}",
            found=nbf,
        )
    if iat > now + leeway:
        raise NotYetValidTokenError(
            f"expected iat in the past, found it {int(iat - now)}s in the future",
            expected=f"iat <= {int(now)}",
            found=iat,
        )
    return VerifiedClaims(
        issuer=iss,
        subject=sub,
        audience=aud,
        issued_at=iat,
        not_before=nbf,
        expires_at=exp,
        jti=jti,
        scopes=scopes,
        kid=kid,
        alg=alg,
        claims=MappingProxyType(claims),
        delegation=delegation,
        limits=limits,
    )

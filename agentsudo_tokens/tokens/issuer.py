"""The issuer: mints short-lived tokens that carry one agent's scopes.

    issuer = Issuer(KeyDirectory("keys").signing_key())
    minted = issuer.issue("SupportBot", ["read:orders", "write:refunds"], ttl=900)
    minted.token      # the JWT
    minted.claims     # what it says

Header ``{"alg", "typ": "at+jwt", "kid"}``; claims ``iss sub aud iat nbf exp jti
scope``. Scopes are checked against the grammar before anything is signed, and
a TTL above the maximum is refused.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..config import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_MAX_TTL,
    DEFAULT_TTL,
    MAX_TTL,
    TTL,
    Settings,
)
from ..errors import ConfigError, InvalidLimitError, InvalidScopeError
from .claims import (
    CONFIRMATION_CLAIM,
    MAX_AUDIENCES,
    MAX_NAME,
    MAX_TIME,
    ONCE_CLAIM,
    TOKEN_TYPE,
    check_agent_name,
)
from .delegation import ACT_CLAIM, ANCESTORS_CLAIM, Delegation, act_claim
from .jws import MAX_TOKEN_BYTES, encode
from .keys import SigningKey
from .limits import LIMITS_CLAIM, Limits, concerns
from .scopes import ScopeSet

if TYPE_CHECKING:
    from ..state import Store

__all__ = ["IssuedToken", "Issuer", "issue_once"]


@dataclass(frozen=True, repr=False)
class IssuedToken:
    """A freshly minted token and its claims. The ``repr`` never shows the token."""

    token: str
    claims: MappingProxyType[str, Any]
    header: MappingProxyType[str, Any]

    def __repr__(self) -> str:
        return f"IssuedToken(sub={self.claims['sub']!r}, jti={self.claims['jti']!r})"


def _name(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_NAME
        or not value.isprintable()
        or value != value.strip()
    ):
        raise ConfigError(
            f"{what}: expected a printable name of 1 to {MAX_NAME} characters, found {value!r}",
            expected="name",
            found=value,
        )
    return value


def _thumbprint(value: object) -> str:
    from .dpop import is_thumbprint

    if not is_thumbprint(value):
        raise ConfigError(
            "jkt: expected a key's RFC 7638 SHA-256 thumbprint (43 base64url characters), "
            f"found {str(value)[:60]!r}",
            expected="thumbprint",
            found=str(value)[:60],
        )
    return str(value)


def _limits_claim(limits: object, granted: ScopeSet) -> list[dict[str, Any]]:
    """The ``authorization_details`` claim: limits that each concern a granted scope.

    :raises InvalidLimitError: not ``Limits``, or a limit on a scope the token does not grant.
    """
    if not isinstance(limits, Limits):
        raise InvalidLimitError(f"limits: expected Limits, found {type(limits).__name__}")
    for limit in limits:
        if not concerns(limit.scope, granted):
            raise InvalidLimitError(
                f"limit for {limit.scope}: the token grants no scope it could apply to",
                expected=granted.claim(),
                found=limit.scope,
            )
    return limits.claim()


class Issuer:
    """Signs tokens with one key.

    :param key: the active signing key.
    :param issuer: the ``iss`` claim.
    :param audience: the default ``aud`` claim.
    :param default_ttl: lifetime in seconds when ``issue`` is given none.
    :param max_ttl: the longest lifetime ``issue`` accepts.
    """

    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str | list[str] = DEFAULT_AUDIENCE,
        default_ttl: int = DEFAULT_TTL,
        max_ttl: int = DEFAULT_MAX_TTL,
    ) -> None:
        self.key = key
        self.issuer = _name(issuer, "issuer")
        self.audience = audience
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    # How errors name the default and maximum TTL; from_settings names their variables.
    _ttl_names = ("default_ttl", "max_ttl")

    def __repr__(self) -> str:
        return f"Issuer(kid={self.key.kid!r}, issuer={self.issuer!r})"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Issuer:
        """An issuer with the key directory's active key and the configured names.

        :raises ConfigError: no usable key directory.
        """
        from .keydir import KeyDirectory

        settings = settings or Settings.from_env()
        issuer = cls(
            KeyDirectory(settings.keys_dir).signing_key(),
            issuer=settings.issuer,
            audience=settings.audience,
            default_ttl=settings.ttl,
            max_ttl=settings.max_ttl,
        )
        issuer._ttl_names = (TTL, MAX_TTL)
        return issuer

    def issue(
        self,
        agent: str,
        scopes: str | list[str] | tuple[str, ...] | ScopeSet,
        *,
        ttl: int | None = None,
        audience: str | list[str] | None = None,
        now: float | None = None,
        once: bool = False,
        delegation: Delegation | None = None,
        jkt: str | None = None,
        limits: Limits | None = None,
    ) -> IssuedToken:
        """Mint a token for ``agent`` with ``scopes``.

        :param scopes: a list, or one string separated by spaces or commas.
        :param ttl: lifetime in seconds (default ``default_ttl``).
        :param audience: the ``aud`` claim (default the issuer's).
        :param now: the issue time in epoch seconds (for tests); default the clock.
        :param once: a one-time token (claim ``once``): verifiers with a state store
            accept it once, verifiers without one refuse it.
        :param delegation: for a token minted by exchange, its chain: the claims ``act``
            and ``ancestors`` (``tokens.delegation``; the broker decides it by ``narrow``).
        :param jkt: bind the token to the key with this RFC 7638 thumbprint (``DPoPKey.jkt``):
            claim ``cnf: {"jkt": ...}``; services then accept it only with a DPoP proof.
        :param limits: constraints on arguments and budgets per scope (``Limits.parse``):
            claim ``authorization_details``. Each limit's scope must match a granted scope.
        :raises InvalidScopeError: a scope outside the grammar, or no scope at all.
        :raises ConfigError: an agent name outside the grammar (``AGENT_NAME_GRAMMAR``),
            a bad audience, or a TTL outside 1..max.
        """
        subject = check_agent_name(agent, "agent")
        granted = scopes if isinstance(scopes, ScopeSet) else ScopeSet.parse(scopes)
        if not granted.scopes:
            raise InvalidScopeError("expected at least one scope, found none", expected=">=1")
        lifetime = self.default_ttl if ttl is None else ttl
        if type(lifetime) is not int or not 0 < lifetime <= self.max_ttl:
            default_name, max_name = self._ttl_names
            raise ConfigError(
                f"{'ttl' if ttl is not None else default_name}: expected 1 to {self.max_ttl} "
                f"seconds ({max_name}), found {lifetime}",
                expected=self.max_ttl,
                found=lifetime,
            )
        aud = self.audience if audience is None else audience
        aud_claim: str | list[str]
        if isinstance(aud, str):
            aud_claim = _name(aud, "audience")
        else:
            aud_claim = [_name(item, "audience") for item in aud]
            if not 1 <= len(aud_claim) <= MAX_AUDIENCES:
                raise ConfigError(
                    f"audience: expected 1 to {MAX_AUDIENCES}, found {len(aud_claim)}",
                    expected=MAX_AUDIENCES,
                    found=len(aud_claim),
                )
        issued = int(time.time() if now is None else now)
        if not 0 <= issued <= MAX_TIME - lifetime:
            import datetime

            last = datetime.datetime.fromtimestamp(MAX_TIME - lifetime, datetime.UTC)
            raise ConfigError(
                "now: expected a time from 1970-01-01T00:00:00Z to "
                f"{last:%Y-%m-%dT%H:%M:%SZ}, found {issued} (epoch seconds)",
                expected=MAX_TIME - lifetime,
                found=issued,
            )
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": aud_claim,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": secrets.token_urlsafe(16),
            "scope": granted.claim(),
        }
        if once:
            claims[ONCE_CLAIM] = True
        if delegation is not None:
            claims[ACT_CLAIM] = act_claim(delegation.actors)
            claims[ANCESTORS_CLAIM] = list(delegation.ancestors)
        if jkt is not None:
            claims[CONFIRMATION_CLAIM] = {"jkt": _thumbprint(jkt)}
        if limits is not None:
            claims[LIMITS_CLAIM] = _limits_claim(limits, granted)
        header = {"alg": self.key.alg, "typ": TOKEN_TYPE, "kid": self.key.kid}
        token = encode(header, claims, self.key)
        if len(token) > MAX_TOKEN_BYTES:
            raise ConfigError(
                f"the token would be {len(token)} bytes; verifiers accept {MAX_TOKEN_BYTES}",
                expected=MAX_TOKEN_BYTES,
                found=len(token),
            )
        return IssuedToken(token, MappingProxyType(claims), MappingProxyType(header))


def issue_once(
    issuer: Issuer,
    store: Store,
    agent: str,
    scopes: str | list[str] | tuple[str, ...],
    **options: Any,
) -> IssuedToken:
    """Mint a token that verifies once, for verifiers that use ``store`` (``state.onetime``).

    :param options: as for ``Issuer.issue`` (``ttl``, ``audience``, ``now``).
    :raises InvalidScopeError: a scope outside the grammar.
    :raises ConfigError: as ``Issuer.issue``.
    :raises StoreUnavailableError: the store cannot be reached; no token is returned.
    """
    from ..state.onetime import mark_one_time

    minted = issuer.issue(agent, scopes, once=True, **options)
    mark_one_time(store, minted.claims)
    return minted

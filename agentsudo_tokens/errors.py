"""The whole error tree of agentsudo-tokens.

    try:
        verifier.verify(token)
    except ExpiredTokenError as err:
        print(err.expected, err.found)   # what was expected, what was found

Every error keeps what was expected and what was found as attributes, and
``str(err)`` is a one-line message. No message, attribute or ``repr`` ever
holds a token or a key.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentSudoError",
    "BadSignatureError",
    "BudgetExhaustedError",
    "ConfigError",
    "DelegationRefusedError",
    "DPoPNonceError",
    "ExpiredTokenError",
    "InvalidDPoPProofError",
    "InvalidLimitError",
    "InvalidScopeError",
    "InvalidTokenError",
    "KeysUnavailableError",
    "LimitExceededError",
    "MalformedTokenError",
    "NotYetValidTokenError",
    "PermissionDeniedError",
    "ReplayedDPoPProofError",
    "RevocationsUnavailableError",
    "RevokedTokenError",
    "StateRequiredError",
    "StoreUnavailableError",
    "TokenBindingError",
    "TokenLifetimeError",
    "UnknownApprovalError",
    "UnknownKeyError",
    "WrongAudienceError",
    "WrongIssuerError",
]


class AgentSudoError(Exception):
    """Root of every error this library raises.

    :param message: the one-line message.
    :param expected: what was expected, when that is meaningful.
    :param found: what was found instead.
    """

    def __init__(self, message: str, *, expected: Any = None, found: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.found = found

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(AgentSudoError):
    """A bad setting, or a key directory that cannot be read or trusted."""


class StoreUnavailableError(ConfigError):
    """The state store (``AGENTSUDO_STORE``) cannot be opened or reached.

    Checks that need the store (revocation, one-time tokens, approvals) fail
    closed with this error: they never pass because the store is down.
    """


class KeysUnavailableError(ConfigError):
    """The public keys cannot be had now: a JWKS URL has failed past its ``max_stale``.

    Verification fails closed with this error (every token is refused, none
    is judged invalid) until a fetch succeeds again; a service answers 503.
    """


class RevocationsUnavailableError(ConfigError):
    """No usable revocation list: none fetched yet, or the last good one is past ``max_stale``.

    Verification fails closed with this error (every token is refused, none is
    judged invalid) until a fresh signed list arrives; a service answers 503.
    """


class UnknownApprovalError(AgentSudoError, LookupError):
    """No pending approval request has that id (unknown, expired or already answered)."""


class InvalidScopeError(AgentSudoError, ValueError):
    """A scope string does not follow the scope grammar."""


class InvalidLimitError(AgentSudoError, ValueError):
    """A limit or budget (``--limit``, ``--budget``, a policy's ``limits``) outside the grammar."""


class PermissionDeniedError(AgentSudoError, PermissionError):
    """A guarded call was refused: no session, a missing scope, an expired session.

    ``agent`` is the agent's name (or ``None``), ``scope`` the scope that was
    required.
    """

    def __init__(
        self,
        message: str,
        *,
        agent: str | None = None,
        scope: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(message, expected=expected, found=found)
        self.agent = agent
        self.scope = scope


class DelegationRefusedError(PermissionDeniedError):
    """A token exchange (delegation to a sub-agent) refused by its narrowing rules or the policy.

    ``reason`` names the rule: ``scope``, ``audience``, ``ttl``, ``depth``,
    ``not_delegable`` (the policy keeps the grant from being passed on),
    ``one_time`` (a one-time token is never exchanged), ``broker_credential``,
    ``revoked_actor`` (the sub-agent's tokens are revoked by a kill switch), ``bound``
    (a token bound to a key, DPoP, is not exchanged).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        agent: str | None = None,
        scope: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(message, agent=agent, scope=scope, expected=expected, found=found)
        self.reason = reason


class LimitExceededError(PermissionDeniedError):
    """A call within the token's scope, refused by a limit the token carries on its arguments.

    ``argument`` names the argument, ``limit`` the limit hit, as the grammar writes it
    (``amount<=100``); the message names them and the value, never other grants.
    """

    def __init__(
        self,
        message: str,
        *,
        argument: str,
        limit: str,
        agent: str | None = None,
        scope: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(message, agent=agent, scope=scope, expected=expected, found=found)
        self.argument = argument
        self.limit = limit


class BudgetExhaustedError(LimitExceededError):
    """A call refused because it would overspend a budget the token carries (a total, calls)."""


class InvalidTokenError(AgentSudoError):
    """A token was rejected. Subclasses name the reason."""


class MalformedTokenError(InvalidTokenError):
    """The token is not a well-formed agentsudo JWT (encoding, header, claims)."""


class BadSignatureError(InvalidTokenError):
    """The signature does not match the token's content and key."""


class ExpiredTokenError(InvalidTokenError):
    """The token's ``exp`` has passed (beyond the allowed leeway)."""


class NotYetValidTokenError(InvalidTokenError):
    """The token's ``nbf`` or ``iat`` lies in the future (beyond the allowed leeway)."""


class TokenLifetimeError(InvalidTokenError):
    """The token's lifetime ``exp - iat`` exceeds the maximum TTL."""


class UnknownKeyError(InvalidTokenError):
    """The token's ``kid`` names no key the verifier trusts."""


class WrongAudienceError(InvalidTokenError):
    """The token was not minted for this audience."""


class WrongIssuerError(InvalidTokenError):
    """The token was minted by another issuer."""


class RevokedTokenError(InvalidTokenError):
    """The token was revoked."""


class StateRequiredError(InvalidTokenError):
    """The token needs a state store (a one-time token) and this verifier has none."""


class InvalidDPoPProofError(InvalidTokenError):
    """A DPoP proof (RFC 9449) was refused: missing, malformed, badly signed, or not for this
    request (method, URL, access token hash, time window). HTTP: ``error="invalid_dpop_proof"``."""


class ReplayedDPoPProofError(InvalidDPoPProofError):
    """A DPoP proof's ``jti`` was seen before: a proof is good for one request only."""


class DPoPNonceError(InvalidDPoPProofError):
    """The server wants its nonce in the proof (missing or stale). HTTP: ``error="use_dpop_nonce"``
    and a fresh nonce in ``DPoP-Nonce``; the client signs a new proof with it and retries once."""


class TokenBindingError(InvalidTokenError):
    """A token presented without the key it is bound to (``cnf.jkt``, RFC 7800 / RFC 9449).

    A bound token sent as a Bearer token, a proof signed by another key than the
    token's, or an unbound token sent with the DPoP scheme. HTTP: ``error="invalid_token"``.
    """

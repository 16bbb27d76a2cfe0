"""agentsudo-tokens: ``sudo`` for AI agents, with signed capability tokens.

    from agentsudo_tokens import Agent, sudo

    @sudo(scope="write:refunds")
    def process_refund(order_id, amount): ...

    with Agent(name="SupportBot", scopes=["write:refunds"]).start_session():
        process_refund("order_123", 50)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent, Session, current_agent, require_signed_sessions
    from .audit import AuditEvent, set_audit_log
    from .claims import UnverifiedClaims, VerifiedClaims
    from .config import Settings
    from .decision import ApprovalContext
    from .errors import (
        AgentSudoError,
        BadSignatureError,
        ConfigError,
        ExpiredTokenError,
        InvalidScopeError,
        InvalidTokenError,
        MalformedTokenError,
        NotYetValidTokenError,
        PermissionDeniedError,
        RevokedTokenError,
        TokenLifetimeError,
        UnknownKeyError,
        WrongAudienceError,
        WrongIssuerError,
    )
    from .guard import check_scope, sudo
    from .issuer import IssuedToken, Issuer
    from .jwks import JwksFile, KeySet
    from .jwks_remote import JwksUrl
    from .keydir import KeyDirectory, KeyInfo
    from .keys import ALGORITHMS, PublicKey, SigningKey
    from .scopes import ScopeSet
    from .verifier import Verifier, decode_unverified

# Names are explicit; their modules load on first use, so the CLI's `issue` and an agent
# process import only what they touch (cryptography, not asyncio or the audit file code).
_EXPORTS: dict[str, str] = {
    "ALGORITHMS": "keys",
    "Agent": "agent",
    "AgentSudoError": "errors",
    "ApprovalContext": "decision",
    "AuditEvent": "audit",
    "BadSignatureError": "errors",
    "ConfigError": "errors",
    "ExpiredTokenError": "errors",
    "InvalidScopeError": "errors",
    "InvalidTokenError": "errors",
    "IssuedToken": "issuer",
    "Issuer": "issuer",
    "JwksFile": "jwks",
    "JwksUrl": "jwks_remote",
    "KeyDirectory": "keydir",
    "KeyInfo": "keydir",
    "KeySet": "jwks",
    "MalformedTokenError": "errors",
    "NotYetValidTokenError": "errors",
    "PermissionDeniedError": "errors",
    "PublicKey": "keys",
    "RevokedTokenError": "errors",
    "ScopeSet": "scopes",
    "Session": "agent",
    "Settings": "config",
    "SigningKey": "keys",
    "TokenLifetimeError": "errors",
    "UnknownKeyError": "errors",
    "UnverifiedClaims": "claims",
    "VerifiedClaims": "claims",
    "Verifier": "verifier",
    "WrongAudienceError": "errors",
    "WrongIssuerError": "errors",
    "check_scope": "guard",
    "current_agent": "agent",
    "decode_unverified": "verifier",
    "require_signed_sessions": "agent",
    "set_audit_log": "audit",
    "sudo": "guard",
}

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "Agent",
    "AgentSudoError",
    "ApprovalContext",
    "AuditEvent",
    "BadSignatureError",
    "ConfigError",
    "ExpiredTokenError",
    "InvalidScopeError",
    "InvalidTokenError",
    "IssuedToken",
    "Issuer",
    "JwksFile",
    "JwksUrl",
    "KeyDirectory",
    "KeyInfo",
    "KeySet",
    "MalformedTokenError",
    "NotYetValidTokenError",
    "PermissionDeniedError",
    "PublicKey",
    "RevokedTokenError",
    "ScopeSet",
    "Session",
    "Settings",
    "SigningKey",
    "TokenLifetimeError",
    "UnknownKeyError",
    "UnverifiedClaims",
    "VerifiedClaims",
    "Verifier",
    "WrongAudienceError",
    "WrongIssuerError",
    "__version__",
    "check_scope",
    "current_agent",
    "decode_unverified",
    "require_signed_sessions",
    "set_audit_log",
    "sudo",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentsudo_tokens' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

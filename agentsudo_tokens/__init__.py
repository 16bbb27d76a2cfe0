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
    from .agent import (
        Agent,
        Session,
        current_agent,
        disable_ambient_agent,
        require_signed_sessions,
        without_agent,
    )
    from .approvals import ApprovalRequest
    from .audit import AuditEvent, set_audit_log
    from .claims import UnverifiedClaims, VerifiedClaims
    from .config import Settings
    from .decision import ApprovalContext
    from .elevation import ask
    from .errors import (
        AgentSudoError,
        BadSignatureError,
        ConfigError,
        ExpiredTokenError,
        InvalidScopeError,
        InvalidTokenError,
        KeysUnavailableError,
        MalformedTokenError,
        NotYetValidTokenError,
        PermissionDeniedError,
        RevocationsUnavailableError,
        RevokedTokenError,
        StateRequiredError,
        StoreUnavailableError,
        TokenLifetimeError,
        UnknownApprovalError,
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
    from .onetime import issue_once
    from .propagation import ContextThreadPoolExecutor, agent_env, copy_session, current_token
    from .revocation import revoke, revoke_agent, revoke_token
    from .revocation_list import RevocationListSource
    from .scopemap import GuardEntry, ScopeMap, scope_map
    from .scopes import ScopeSet
    from .store import Store, open_store
    from .verifier import Verifier, decode_unverified

# Names are explicit; their modules load on first use, so the CLI's `issue` and an agent
# process import only what they touch (cryptography, not asyncio or the audit file code).
_EXPORTS: dict[str, str] = {
    "ALGORITHMS": "keys",
    "Agent": "agent",
    "AgentSudoError": "errors",
    "ApprovalContext": "decision",
    "ApprovalRequest": "approvals",
    "AuditEvent": "audit",
    "BadSignatureError": "errors",
    "ConfigError": "errors",
    "ContextThreadPoolExecutor": "propagation",
    "ExpiredTokenError": "errors",
    "GuardEntry": "scopemap",
    "InvalidScopeError": "errors",
    "InvalidTokenError": "errors",
    "IssuedToken": "issuer",
    "Issuer": "issuer",
    "JwksFile": "jwks",
    "JwksUrl": "jwks_remote",
    "KeyDirectory": "keydir",
    "KeyInfo": "keydir",
    "KeySet": "jwks",
    "KeysUnavailableError": "errors",
    "MalformedTokenError": "errors",
    "NotYetValidTokenError": "errors",
    "PermissionDeniedError": "errors",
    "PublicKey": "keys",
    "RevocationListSource": "revocation_list",
    "RevocationsUnavailableError": "errors",
    "RevokedTokenError": "errors",
    "ScopeMap": "scopemap",
    "ScopeSet": "scopes",
    "Session": "agent",
    "Settings": "config",
    "SigningKey": "keys",
    "Store": "store",
    "StateRequiredError": "errors",
    "StoreUnavailableError": "errors",
    "TokenLifetimeError": "errors",
    "UnknownApprovalError": "errors",
    "UnknownKeyError": "errors",
    "UnverifiedClaims": "claims",
    "VerifiedClaims": "claims",
    "Verifier": "verifier",
    "WrongAudienceError": "errors",
    "WrongIssuerError": "errors",
    "agent_env": "propagation",
    "ask": "elevation",
    "check_scope": "guard",
    "copy_session": "propagation",
    "current_agent": "agent",
    "current_token": "propagation",
    "decode_unverified": "verifier",
    "issue_once": "onetime",
    "open_store": "store",
    "require_signed_sessions": "agent",
    "disable_ambient_agent": "agent",
    "revoke": "revocation",
    "revoke_agent": "revocation",
    "revoke_token": "revocation",
    "scope_map": "scopemap",
    "set_audit_log": "audit",
    "sudo": "guard",
    "without_agent": "agent",
}

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "Agent",
    "AgentSudoError",
    "ApprovalContext",
    "ApprovalRequest",
    "AuditEvent",
    "BadSignatureError",
    "ConfigError",
    "ContextThreadPoolExecutor",
    "ExpiredTokenError",
    "GuardEntry",
    "InvalidScopeError",
    "InvalidTokenError",
    "IssuedToken",
    "Issuer",
    "JwksFile",
    "JwksUrl",
    "KeyDirectory",
    "KeyInfo",
    "KeySet",
    "KeysUnavailableError",
    "MalformedTokenError",
    "NotYetValidTokenError",
    "PermissionDeniedError",
    "PublicKey",
    "RevocationListSource",
    "RevocationsUnavailableError",
    "RevokedTokenError",
    "ScopeMap",
    "ScopeSet",
    "Session",
    "Settings",
    "SigningKey",
    "StateRequiredError",
    "Store",
    "StoreUnavailableError",
    "TokenLifetimeError",
    "UnknownApprovalError",
    "UnknownKeyError",
    "UnverifiedClaims",
    "VerifiedClaims",
    "Verifier",
    "WrongAudienceError",
    "WrongIssuerError",
    "__version__",
    "agent_env",
    "ask",
    "check_scope",
    "copy_session",
    "current_agent",
    "current_token",
    "decode_unverified",
    "disable_ambient_agent",
    "issue_once",
    "open_store",
    "require_signed_sessions",
    "revoke",
    "revoke_agent",
    "revoke_token",
    "scope_map",
    "set_audit_log",
    "sudo",
    "without_agent",
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

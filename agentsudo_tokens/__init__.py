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
    from .audit.events import AuditEvent, set_audit_log
    from .config import Settings
    from .errors import (
        AgentSudoError,
        BadSignatureError,
        BudgetExhaustedError,
        ConfigError,
        DelegationRefusedError,
        DPoPNonceError,
        ExpiredTokenError,
        InvalidDPoPProofError,
        InvalidLimitError,
        InvalidScopeError,
        InvalidTokenError,
        KeysUnavailableError,
        LimitExceededError,
        MalformedTokenError,
        NotYetValidTokenError,
        PermissionDeniedError,
        ReplayedDPoPProofError,
        RevocationsUnavailableError,
        RevokedTokenError,
        StateRequiredError,
        StoreUnavailableError,
        TokenBindingError,
        TokenLifetimeError,
        UnknownApprovalError,
        UnknownKeyError,
        WrongAudienceError,
        WrongIssuerError,
    )
    from .guard.agent import (
        Agent,
        Session,
        current_agent,
        disable_ambient_agent,
        require_signed_sessions,
        without_agent,
    )
    from .guard.decision import ApprovalContext
    from .guard.elevation import ask
    from .guard.propagation import ContextThreadPoolExecutor, agent_env, copy_session, current_token
    from .guard.sudo import check_scope, sudo
    from .integrations.scopemap import GuardEntry, ScopeMap, scope_map
    from .state import Store, open_store
    from .state.approvals import ApprovalRequest
    from .tokens.claims import UnverifiedClaims, VerifiedClaims
    from .tokens.dpop import DPoPKey
    from .tokens.dpop_nonce import DPoPNonces
    from .tokens.dpop_proof import ProofVerifier
    from .tokens.issuer import IssuedToken, Issuer, issue_once
    from .tokens.jwks import JwksFile, KeySet
    from .tokens.jwks_remote import JwksUrl
    from .tokens.keydir import KeyDirectory, KeyInfo
    from .tokens.keys import ALGORITHMS, PublicKey, SigningKey
    from .tokens.limits import Limit, Limits
    from .tokens.revocation import revoke, revoke_agent, revoke_token
    from .tokens.revocation_list import RevocationListSource
    from .tokens.scopes import ScopeSet
    from .tokens.verifier import Verifier, decode_unverified

# Names are explicit; their modules load on first use, so the CLI's `issue` and an agent
# process import only what they touch (cryptography, not asyncio or the audit file code).
_EXPORTS: dict[str, str] = {
    "ALGORITHMS": "tokens.keys",
    "Agent": "guard.agent",
    "AgentSudoError": "errors",
    "ApprovalContext": "guard.decision",
    "ApprovalRequest": "state.approvals",
    "AuditEvent": "audit.events",
    "BadSignatureError": "errors",
    "BudgetExhaustedError": "errors",
    "ConfigError": "errors",
    "ContextThreadPoolExecutor": "guard.propagation",
    "DPoPKey": "tokens.dpop",
    "DPoPNonceError": "errors",
    "DPoPNonces": "tokens.dpop_nonce",
    "ExpiredTokenError": "errors",
    "GuardEntry": "integrations.scopemap",
    "DelegationRefusedError": "errors",
    "InvalidDPoPProofError": "errors",
    "InvalidLimitError": "errors",
    "InvalidScopeError": "errors",
    "InvalidTokenError": "errors",
    "IssuedToken": "tokens.issuer",
    "Issuer": "tokens.issuer",
    "JwksFile": "tokens.jwks",
    "JwksUrl": "tokens.jwks_remote",
    "KeyDirectory": "tokens.keydir",
    "KeyInfo": "tokens.keydir",
    "KeySet": "tokens.jwks",
    "KeysUnavailableError": "errors",
    "Limit": "tokens.limits",
    "LimitExceededError": "errors",
    "Limits": "tokens.limits",
    "MalformedTokenError": "errors",
    "NotYetValidTokenError": "errors",
    "PermissionDeniedError": "errors",
    "ProofVerifier": "tokens.dpop_proof",
    "PublicKey": "tokens.keys",
    "ReplayedDPoPProofError": "errors",
    "RevocationListSource": "tokens.revocation_list",
    "RevocationsUnavailableError": "errors",
    "RevokedTokenError": "errors",
    "ScopeMap": "integrations.scopemap",
    "ScopeSet": "tokens.scopes",
    "Session": "guard.agent",
    "Settings": "config",
    "SigningKey": "tokens.keys",
    "Store": "state",
    "StateRequiredError": "errors",
    "StoreUnavailableError": "errors",
    "TokenBindingError": "errors",
    "TokenLifetimeError": "errors",
    "UnknownApprovalError": "errors",
    "UnknownKeyError": "errors",
    "UnverifiedClaims": "tokens.claims",
    "VerifiedClaims": "tokens.claims",
    "Verifier": "tokens.verifier",
    "WrongAudienceError": "errors",
    "WrongIssuerError": "errors",
    "agent_env": "guard.propagation",
    "ask": "guard.elevation",
    "check_scope": "guard.sudo",
    "copy_session": "guard.propagation",
    "current_agent": "guard.agent",
    "current_token": "guard.propagation",
    "decode_unverified": "tokens.verifier",
    "issue_once": "tokens.issuer",
    "open_store": "state",
    "require_signed_sessions": "guard.agent",
    "disable_ambient_agent": "guard.agent",
    "revoke": "tokens.revocation",
    "revoke_agent": "tokens.revocation",
    "revoke_token": "tokens.revocation",
    "scope_map": "integrations.scopemap",
    "set_audit_log": "audit.events",
    "sudo": "guard.sudo",
    "without_agent": "guard.agent",
}

__version__ = "0.1.0"


def _key_pipe_closes_on_exec() -> None:
    """Mark the DPoP key pipe ``agentsudo run --dpop`` handed this process close-on-exec.

    The one import-time side effect of the package, on purpose: until the key is
    read (at the first bound request), the pipe is an inheritable descriptor, and a
    shell this process starts (``os.system``) would pass it to a program that can
    then read the key. Importing the package is as early as this code can act. It
    reads one variable and makes two system calls; the descriptor must be a pipe
    whose inode the variable names (anything else is left alone, as
    ``guard.possession`` does); it never raises. The pipe stays open for
    ``process_key`` to read.
    """
    import os
    import stat

    try:  # config.DPOP_KEY_FD and its FD:INODE, without importing config (nothing is, here)
        fd, _, inode = os.environ.get("AGENTSUDO_DPOP_KEY_FD", "").partition(":")  # noqa: TID251
        if not (fd.isascii() and fd.isdigit() and inode.isascii() and inode.isdigit()):
            return
        info = os.fstat(int(fd))
        if int(fd) > 2 and stat.S_ISFIFO(info.st_mode) and info.st_ino == int(inode):
            os.set_inheritable(int(fd), False)
    except Exception:  # closed, or anything odd: never fail an import; the key's reader will say
        return


_key_pipe_closes_on_exec()

__all__ = [
    "ALGORITHMS",
    "Agent",
    "AgentSudoError",
    "ApprovalContext",
    "ApprovalRequest",
    "AuditEvent",
    "BadSignatureError",
    "BudgetExhaustedError",
    "ConfigError",
    "ContextThreadPoolExecutor",
    "DPoPKey",
    "DPoPNonceError",
    "DPoPNonces",
    "DelegationRefusedError",
    "ExpiredTokenError",
    "GuardEntry",
    "InvalidDPoPProofError",
    "InvalidLimitError",
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
    "Limit",
    "LimitExceededError",
    "Limits",
    "MalformedTokenError",
    "NotYetValidTokenError",
    "PermissionDeniedError",
    "ProofVerifier",
    "PublicKey",
    "ReplayedDPoPProofError",
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
    "TokenBindingError",
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

"""agentsudo-tokens: ``sudo`` for AI agents, with signed capability tokens.

from agentsudo_tokens import Agent, sudo

@sudo(scope="write:refunds")
def process_refund(order_id, amount): ...

with Agent(name="SupportBot", scopes=["write:refunds"]).start_session():
    process_refund("order_123", 50)
"""

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
from .keydir import KeyDirectory, KeyInfo
from .keys import ALGORITHMS, PublicKey, SigningKey
from .scopes import ScopeSet
from .verifier import Verifier, decode_unverified

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

"""One-time tokens: the first successful verification consumes the ``jti``; later uses fail.

    mark_one_time(store, minted.claims)  # what tokens.issuer.issue_once does before handing out
    minted = issue_once(issuer, store, "DeployBot", ["deploy:prod"], ttl=300)   # the same, in one
    verifier = Verifier(keys, store=store)
    verifier.verify(minted.token)        # accepted, and consumed
    verifier.verify(minted.token)        # RevokedTokenError: already used (in any process)

The token says it is single-use (claim ``"once": true``), so every verifier
knows: one with a state store claims ``used:<jti>`` with an atomic add (SQLite
``INSERT``, Redis ``SET NX``), so of N racing verifiers exactly one wins; one
without a store refuses the token (``StateRequiredError``), failing closed.
The issuer also records ``once:<jti>`` in the store before it hands the token
out, which proves the store works and lists the token's single use there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import MAX_LEEWAY
from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Store

__all__ = ["mark_one_time"]

ONCE = "once:"
USED = "used:"


def mark_one_time(store: Store, claims: Mapping[str, Any]) -> None:
    """Record that the token with these claims may be used once. Do it before handing it out.

    :raises ConfigError: the claims lack ``jti`` or ``exp``.
    :raises StoreUnavailableError: the store cannot be reached.
    """
    jti, exp = claims.get("jti"), claims.get("exp")
    if not isinstance(jti, str) or not jti or type(exp) is not int:
        raise ConfigError("a one-time token needs a jti and an integer exp", found=sorted(claims))
    store.put(ONCE + jti, "1", expires_at=exp + MAX_LEEWAY)

"""DPoP at the broker: binding a token to the caller's key, and proofs where a token asks.

    jkt = await requested_binding(request, proofs)    # None: no DPoP header, a plain token
    await require_possession(request, proofs, token, claims, "body")   # elevation

RFC 9449 §5: a client that wants a bound token sends ``DPoP: <proof>`` with its
token request, a proof for ``POST`` and the endpoint's own URL (over the Unix
socket ``http://localhost/v1/tokens``), signed by the key it holds. The
broker checks it like any proof (no access token yet, so no ``ath``), records
its ``jti`` in the store so it cannot be replayed, and binds the token to the
proof's key: ``cnf: {"jkt": ...}``, answered with ``token_type: "DPoP"``.

An elevation request (and its status) is authenticated by the asking token
itself; a bound token there needs a proof of its key, like at any service.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import InvalidDPoPProofError, TokenBindingError
from .problems import Problem

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..tokens.claims import VerifiedClaims
    from ..tokens.dpop_proof import ProofVerifier

__all__ = ["require_possession", "requested_binding"]


async def requested_binding(request: Request, proofs: ProofVerifier) -> str | None:
    """The thumbprint of the key the caller proved it holds, or ``None`` without a proof.

    :raises Problem: 400 ``invalid-dpop-proof``: several proofs, or a refused one.
    :raises StoreUnavailableError: the replay record cannot be made (a 503).
    """
    found = request.headers.getlist("dpop")
    if not found:
        return None
    if len(found) > 1:
        raise Problem(400, "invalid-dpop-proof", f"expected one DPoP header, found {len(found)}")
    url = str(request.url.replace(query="", fragment=""))
    try:
        checked = await asyncio.to_thread(proofs.verify, found[0], method="POST", url=url)
    except InvalidDPoPProofError as exc:
        raise Problem(400, "invalid-dpop-proof", str(exc)) from None
    return checked.jkt


async def require_possession(
    request: Request, proofs: ProofVerifier, token: str, claims: VerifiedClaims, scheme: str
) -> None:
    """Where a token is its own authentication (elevation): a token bound to a key counts
    only with a proof of that key for this request (and the DPoP scheme in Authorization).

    :param scheme: how the token came: ``bearer``/``dpop`` (Authorization), or ``body``.
    :raises Problem: 401 ``invalid-token`` or ``invalid-dpop-proof``.
    :raises StoreUnavailableError: the replay record cannot be made (a 503).
    """
    if claims.jkt is None and scheme != "dpop":
        return  # a plain token, as before
    if scheme == "body":
        scheme = "dpop"  # a bound token in the body: its proof comes in the DPoP header
    url = str(request.url.replace(query="", fragment=""))
    try:
        await asyncio.to_thread(
            proofs.check_request,
            claims,
            scheme=scheme,
            token=token,
            proofs=request.headers.getlist("dpop"),
            method=request.method,
            url=url,
        )
    except InvalidDPoPProofError as exc:
        raise Problem(401, "invalid-dpop-proof", str(exc)) from None
    except TokenBindingError as exc:
        raise Problem(401, "invalid-token", str(exc)) from None

"""Binding a token to the caller's key at issuance: a DPoP proof to the token endpoint.

    jkt = await requested_binding(request, proofs)    # None: no DPoP header, a plain token

RFC 9449 §5: a client that wants a bound token sends ``DPoP: <proof>`` with its
token request, a proof for ``POST`` and the endpoint's own URL (over the Unix
socket ``http://localhost/v1/tokens``), signed by the key it holds. The
broker checks it like any proof (no access token yet, so no ``ath``), records
its ``jti`` in the store so it cannot be replayed, and binds the token to the
proof's key: ``cnf: {"jkt": ...}``, answered with ``token_type: "DPoP"``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import InvalidDPoPProofError
from .problems import Problem

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..tokens.dpop_proof import ProofVerifier

__all__ = ["requested_binding"]


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

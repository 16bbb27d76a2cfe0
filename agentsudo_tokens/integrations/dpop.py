"""DPoP at the HTTP edge of a service: what the FastAPI and MCP integrations share.

    app.add_middleware(AgentSudoMiddleware, proofs=ProofVerifier(nonces=DPoPNonces()))

A service checks a request's credentials in two steps: the token (the
``Verifier``, as for a bearer token), then the binding (``ProofVerifier.
check_request``): a token bound to a key (``cnf.jkt``) must come as
``Authorization: DPoP <token>`` with one ``DPoP`` proof for this method and
URL, signed by that key. The URL is the request's own: scheme, ``Host`` header
and raw path (behind a proxy, let the server fix scheme and host, as uvicorn's
``--proxy-headers`` does). Refusals are 401s with a ``DPoP`` challenge (RFC
9449 §7.1): ``invalid_dpop_proof``, ``invalid_token`` (a binding that does not
hold) or ``use_dpop_nonce`` with a fresh ``DPoP-Nonce``.

Without a ``ProofVerifier`` of its own, a service uses one per verifier
(``default_proofs``): its replay cache is the verifier's state store when it
has one (shared by every process using that store), else this process's memory.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..errors import DPoPNonceError, InvalidDPoPProofError, InvalidTokenError, TokenBindingError
from ..state.replay import MemoryReplayCache, StoreReplayCache
from ..tokens.claims import VerifiedClaims
from ..tokens.dpop_proof import ProofVerifier
from ..tokens.keys import ALGORITHMS
from ..tokens.verifier import Verifier

__all__ = [
    "ALGS",
    "Challenge",
    "check_possession",
    "default_proofs",
    "dpop_challenge",
    "may_block",
    "proof_headers",
    "request_url",
]

ALGS = " ".join(ALGORITHMS)  # the challenge's algs parameter
_PROVEN = "agentsudo.dpop"  # ASGI scope key: the (token, proof) already checked for this request
_WEB_SCHEMES = {"ws": "http", "wss": "https"}
_DEFAULTS: weakref.WeakKeyDictionary[Verifier, ProofVerifier] = weakref.WeakKeyDictionary()

Scope = MutableMapping[str, Any]


def default_proofs(verifier: Verifier) -> ProofVerifier:
    """The proof verifier a service uses with ``verifier`` unless given one: one per verifier,
    its replay cache the verifier's store when it has one, else memory."""
    proofs = _DEFAULTS.get(verifier)
    if proofs is None:
        store = verifier.store
        replay = StoreReplayCache(store) if store is not None else MemoryReplayCache()
        proofs = _DEFAULTS.setdefault(verifier, ProofVerifier(replay=replay))
    return proofs


def may_block(proofs: ProofVerifier) -> bool:
    """True when checking a proof waits on a store (a replay cache that is not in memory)."""
    return not isinstance(proofs.replay, MemoryReplayCache)


def proof_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The values of a request's ``DPoP`` headers (RFC 9449 allows exactly one)."""
    return [value.decode("latin-1") for name, value in headers if name.lower() == b"dpop"]


def request_url(scope: Scope) -> str:
    """The URL a request was sent to, as ``htu`` compares it: scheme, ``Host`` and raw path."""
    scheme = scope.get("scheme", "http")
    scheme = _WEB_SCHEMES.get(scheme, scheme)
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("root_path", "") + scope.get("path", "/")
    return f"{scheme}://{host}{path}"


def check_possession(
    proofs: ProofVerifier, scope: Scope, scheme: str, token: str, claims: VerifiedClaims
) -> None:
    """The binding rule for one request, once per request even when several checks ask.

    :raises TokenBindingError: as ``ProofVerifier.check_request``.
    :raises InvalidDPoPProofError: as ``ProofVerifier.check_request``.
    :raises StoreUnavailableError: the replay cache cannot answer.
    """
    if claims.jkt is None and scheme == "bearer":
        return  # a plain bearer token: nothing to prove
    found = proof_headers(scope.get("headers", ()))
    if scope.get(_PROVEN) == (token, found):
        return  # checked already for this request (the middleware, then a dependency)
    proofs.check_request(
        claims,
        scheme=scheme,
        token=token,
        proofs=found,
        method=scope.get("method", "GET"),
        url=request_url(scope),
    )
    scope[_PROVEN] = (token, found)


@dataclass(frozen=True)
class Challenge:
    """A 401 for a refused credential: the reason for the client and the response headers."""

    reason: str
    headers: dict[str, str]


def _quoted(text: str) -> str:
    """A message as a quoted-string's content: no quote, backslash or control character."""
    return "".join(c if c.isprintable() and c not in '"\\' else "'" for c in text)[:300]


def dpop_challenge(exc: InvalidTokenError, reason: str, *, nonce: str | None = None) -> Challenge:
    """The ``DPoP`` challenge for a refusal (RFC 9449 §7.1, §9).

    :param reason: what the client is told for a token refused for other reasons.
    :param nonce: the service's current nonce, sent with ``use_dpop_nonce``.
    """
    if isinstance(exc, InvalidDPoPProofError):
        error = "use_dpop_nonce" if isinstance(exc, DPoPNonceError) else "invalid_dpop_proof"
        reason = _quoted(exc.message.removeprefix("DPoP proof: "))
        reason = f"DPoP proof: {reason}"
    elif isinstance(exc, TokenBindingError):
        error = "invalid_token"
        reason = _quoted(exc.message)
    else:
        error = "invalid_token"
    headers = {
        "WWW-Authenticate": f'DPoP error="{error}", error_description="{reason}", algs="{ALGS}"'
    }
    if isinstance(exc, DPoPNonceError) and nonce is not None:
        headers["DPoP-Nonce"] = nonce
    return Challenge(reason, headers)


BINDING_ERRORS = (InvalidDPoPProofError, TokenBindingError)  # answered with a DPoP challenge

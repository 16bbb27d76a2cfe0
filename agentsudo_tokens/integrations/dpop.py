"""DPoP at the HTTP edge of a service: what the FastAPI and MCP integrations share.

    app.add_middleware(AgentSudoMiddleware, proofs=ProofVerifier(nonces=DPoPNonces()))

A service checks a request's credentials in two steps: the token (the
``Verifier``, as for a bearer token), then the binding (``ProofVerifier.
check_request``): a token bound to a key (``cnf.jkt``) must come as
``Authorization: DPoP <token>`` with one ``DPoP`` proof for this method and
URL, signed by that key. The URL is the service's public origin and the
request's raw path when the origin is known (``ProofVerifier(origin=...)``, else
``AGENTSUDO_DPOP_ORIGIN``); without one, the request's scheme and ``Host`` header,
which the client chooses: a proof made for one service then passes at another
that does not share its replay cache (behind a proxy or beside other services,
set the origin). Refusals are 401s with a ``DPoP`` challenge (RFC 9449 §7.1):
``invalid_dpop_proof``, ``invalid_token`` (a binding that does not hold) or
``use_dpop_nonce`` with a fresh ``DPoP-Nonce``.

Without a ``ProofVerifier`` of its own, a service uses one per verifier
(``default_proofs``): its replay cache is the verifier's state store when it
has one (shared by every process using that store), else this process's memory.
A request is checked once per ``ProofVerifier``: a dependency with options of
its own (nonces, an origin) checks again behind the middleware.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..config import dpop_origin
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
    "service_origin",
]

ALGS = " ".join(ALGORITHMS)  # the challenge's algs parameter
_PROVEN = "agentsudo.dpop"  # ASGI scope key: the proof checked for this request, and by whom
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?").fullmatch
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


def _proofs_and_host(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[str], bytes | None]:
    """``proof_headers`` and the first ``Host`` header (``request_url``'s), in one pass."""
    found: list[str] = []
    host = None
    for name, value in headers:
        if name.lower() == b"dpop":
            found.append(value.decode("latin-1"))
        elif host is None and name == b"host":
            host = value
    return found, host


def service_origin(proofs: ProofVerifier) -> str | None:
    """The public origin proofs must name: the ``ProofVerifier``'s, else ``AGENTSUDO_DPOP_ORIGIN``.

    :raises ConfigError: ``AGENTSUDO_DPOP_ORIGIN`` is not an origin.
    """
    if proofs.origin is not None:
        return proofs.origin
    return dpop_origin()


def request_url(scope: Scope, origin: str | None = None) -> str:
    """The URL a request was sent to, as ``htu`` compares it: ``origin`` (else the scheme and
    ``Host`` the client sent) and the raw path.

    :raises InvalidDPoPProofError: no ``origin``, and a ``Host`` header that is no host.
    """
    host = next((value for name, value in scope.get("headers", ()) if name == b"host"), None)
    return _url(scope, origin, host)


def _url(scope: Scope, origin: str | None, host_header: bytes | None) -> str:
    """``request_url``, given the request's first ``Host`` header."""
    raw = scope.get("raw_path")
    path: str = (
        raw.decode("latin-1") if raw else scope.get("root_path", "") + scope.get("path", "/")
    )
    if origin is not None:
        return origin + path
    scheme = scope.get("scheme", "http")
    scheme = _WEB_SCHEMES.get(scheme, scheme)
    if host_header is not None:
        host = host_header.decode("latin-1")
        if _HOST(host) is None:
            raise InvalidDPoPProofError(
                "DPoP proof: the request's Host header is not a host[:port]", found=host[:60]
            )
    else:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}{path}"


class _Proven:
    """The proof checked for a request, and every ``ProofVerifier`` that accepted it."""

    __slots__ = ("token", "found", "by")

    def __init__(self, token: str, found: list[str], by: ProofVerifier) -> None:
        self.token = token
        self.found = found
        self.by = [by]


def check_possession(
    proofs: ProofVerifier,
    scope: Scope,
    scheme: str,
    token: str,
    claims: VerifiedClaims,
    origin: str | None = None,
) -> None:
    """The binding rule for one request, once per ``ProofVerifier`` even when several
    checks ask (the middleware, then a dependency).

    A second ``ProofVerifier`` (a dependency's own: nonces, another origin) checks
    the proof again, all but the replay cache: the first check recorded the
    proof as used, and every request with it meets that first check again.

    :param origin: the public origin (``service_origin``); ``None``: the ``Host`` header.
    :raises TokenBindingError: as ``ProofVerifier.check_request``.
    :raises InvalidDPoPProofError: as ``ProofVerifier.check_request``.
    :raises StoreUnavailableError: the replay cache cannot answer.
    """
    if claims.jkt is None and scheme == "bearer":
        return  # a plain bearer token: nothing to prove
    found, host = _proofs_and_host(scope.get("headers", ()))
    proven = scope.get(_PROVEN)
    if not isinstance(proven, _Proven) or proven.token != token or proven.found != found:
        proven = None
    elif any(checked is proofs for checked in proven.by):
        return  # this verifier accepted this very proof for this request already
    proofs.check_request(
        claims,
        scheme=scheme,
        token=token,
        proofs=found,
        method=scope.get("method", "GET"),
        url=_url(scope, origin, host),
        record=proven is None,
    )
    if proven is None:
        scope[_PROVEN] = _Proven(token, found, proofs)
    else:
        proven.by.append(proofs)


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
# the 503's reason for a ReplayCacheNotSharedError: the operator's fix, in one line
UNSHARED_REPLAY = "the DPoP replay cache is one worker's; set AGENTSUDO_STORE"

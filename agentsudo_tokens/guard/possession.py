"""The agent's side of DPoP: the process's key, and a proof for each request it sends.

    signer = ProofSigner()                          # the key ``agentsudo run --dpop`` handed over
    signer = ProofSigner(DPoPKey.generate())        # or one this process made
    headers = signer.headers("POST", "https://billing.example/refunds")
    # {"Authorization": "DPoP <token>", "DPoP": "<proof>"} for a bound token,
    # {"Authorization": "Bearer <token>"} for a plain one
    if signer.retry(status, response_headers, url): ...   # the server asked for its nonce

The token is the acting agent's (``current_token``). A token bound to a key
(``cnf.jkt``) goes out only with a fresh proof signed by that key; a process
that does not hold the key cannot send it (``PermissionDeniedError``), so a
token copied from a log is no use here either.

``agentsudo run --dpop`` makes the key in memory and hands it to its child
through an inherited pipe named by ``AGENTSUDO_DPOP_KEY_FD``: the key is read
once, the pipe closed, and it never touches a disk, the environment or a
command line (``process_key``). Importing ``agentsudo_tokens`` marks the pipe
close-on-exec, so no program this process starts afterwards gets it (a Python
``subprocess`` child never did); one started before the import, or by a
non-Python parent (a shell), does. Until it is read, a process of the agent's
own user can also open it through ``/proc``: the key keeps a copied token
useless elsewhere, it is no boundary against the agent's own user.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from ..errors import PermissionDeniedError
from ..tokens.dpop import DPoPKey
from .agent import current_agent
from .process_key import process_key
from .propagation import current_token

__all__ = ["ProofSigner", "process_key"]

_MAX_NONCE = 512
_MAX_ORIGINS = 64


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _wants_nonce(challenge: str) -> bool:
    """True when a ``WWW-Authenticate`` value holds a DPoP challenge with ``use_dpop_nonce``."""
    scheme, _, rest = challenge.strip().partition(" ")
    return scheme.lower() == "dpop" and 'error="use_dpop_nonce"' in rest


class ProofSigner:
    """Authorization headers for the acting agent: Bearer, or DPoP with a fresh proof.

    Remembers the last ``DPoP-Nonce`` each origin sent (RFC 9449 §9) and puts it
    in the next proof to that origin.

    :param key: the DPoP key the tokens are bound to; default ``process_key()``.
    """

    def __init__(self, key: DPoPKey | None = None) -> None:
        self.key = key
        self._nonces: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ProofSigner({self.key!r})"

    def _key_for(self, jkt: str, agent: str) -> DPoPKey:
        key = self.key if self.key is not None else process_key()
        if key is None or key.jkt != jkt:
            raise PermissionDeniedError(
                f"agent {agent!r}'s token is bound to a key this process does not hold; "
                "it cannot be sent without a proof of that key",
                agent=agent,
                expected=jkt,
                found=None if key is None else key.jkt,
            )
        return key

    def headers(self, method: str, url: str) -> dict[str, str]:
        """The headers that authenticate a request as the acting agent.

        :raises PermissionDeniedError: no agent with a token acts, or its token is bound
            to a key this process does not hold.
        :raises ConfigError: ``AGENTSUDO_DPOP_KEY_FD`` is set and unusable.
        """
        token = current_token()
        agent = current_agent()
        claims = agent.claims if agent is not None else None
        jkt = claims.jkt if claims is not None else None
        if jkt is None:
            return {"Authorization": f"Bearer {token}"}
        key = self._key_for(jkt, claims.subject if claims else "?")
        proof = key.proof(method, url, token=token, nonce=self._nonces.get(_origin(url)))
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    def retry(self, status: int, headers: Mapping[str, str], url: str) -> bool:
        """Note a ``DPoP-Nonce`` the server sent; True when the request should be sent again
        with it (a 401 ``use_dpop_nonce`` with a nonce not tried yet)."""
        nonce = headers.get("dpop-nonce")
        if nonce is None or not 0 < len(nonce) <= _MAX_NONCE or not nonce.isprintable():
            return False
        origin = _origin(url)
        fresh = self._nonces.get(origin) != nonce
        if len(self._nonces) >= _MAX_ORIGINS and origin not in self._nonces:
            self._nonces.clear()
        self._nonces[origin] = nonce
        return fresh and status == 401 and _wants_nonce(headers.get("www-authenticate", ""))

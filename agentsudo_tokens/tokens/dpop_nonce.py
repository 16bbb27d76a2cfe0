"""Server nonces for DPoP proofs (RFC 9449 §9): short-lived, stateless, HMAC-signed.

    nonces = DPoPNonces()                     # a random secret: this process alone
    nonces = DPoPNonces(secret=shared_bytes)  # the same secret in every process of a service
    nonce = nonces.current()                  # sent in a DPoP-Nonce header
    nonces.accepts(nonce)                     # True while it is current or the one before

A nonce is the time slot it was made in and a MAC over it: no state to share
but the secret. A slot lasts ``lifetime`` seconds; a nonce is accepted in its
slot and the next, so it lives between one and two lifetimes. A server that
demands nonces bounds how far ahead a stolen key could have signed proofs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from ..errors import ConfigError
from .keys import b64url_encode

__all__ = ["DPoPNonces"]

_SLOT_BYTES = 8
_MAC_BYTES = 16


class DPoPNonces:
    """Makes and checks a service's DPoP nonces.

    :param secret: at least 32 bytes shared by every process that checks the
        nonces; default a random secret of this process.
    :param lifetime: seconds a slot lasts (a nonce lives one to two slots).
    :param clock: seconds since the epoch; for tests.
    :raises ConfigError: a secret shorter than 32 bytes, or a lifetime below 1 s.
    """

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        lifetime: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None and (not isinstance(secret, bytes) or len(secret) < 32):
            raise ConfigError("DPoP nonces: expected a secret of at least 32 bytes")
        if type(lifetime) is not int or lifetime < 1:
            raise ConfigError(f"DPoP nonces: expected a lifetime of 1 s or more, found {lifetime}")
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.lifetime = lifetime
        self._clock = clock

    def __repr__(self) -> str:
        return f"DPoPNonces(lifetime={self.lifetime})"

    def _make(self, slot: int) -> str:
        raw = slot.to_bytes(_SLOT_BYTES, "big")
        mac = hmac.new(self._secret, raw, hashlib.sha256).digest()[:_MAC_BYTES]
        return b64url_encode(raw + mac)

    def _slot(self) -> int:
        return int(self._clock() // self.lifetime)

    def current(self) -> str:
        """The nonce to hand out now."""
        return self._make(self._slot())

    def accepts(self, nonce: object) -> bool:
        """True when ``nonce`` is this service's, of the current slot or the one before."""
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        slot = self._slot()
        return any(hmac.compare_digest(nonce, self._make(s)) for s in (slot, slot - 1))

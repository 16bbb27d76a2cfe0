"""DPoP (RFC 9449): a key pair the agent's process holds in memory, and proofs signed with it.

    key = DPoPKey.generate()              # P-256 (or "EdDSA"); never written anywhere
    key.jkt                               # RFC 7638 thumbprint: the bound token's cnf.jkt
    proof = key.proof("POST", "https://billing.example/refunds", token=token)
    # Authorization: DPoP <token>   and   DPoP: <proof>

A proof is a JWS with header ``{"typ": "dpop+jwt", "alg", "jwk"}`` (the public
key) and claims ``jti htm htu iat`` (plus ``ath``, the access token's SHA-256,
and ``nonce`` when the server asks for one). ``htu`` is the request's URL
without query or fragment, normalized (``normalize_htu``) so client and server
compare the same text. Checking proofs is ``dpop_proof``'s job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import ConfigError
from .keys import PublicKey, SigningKey, _required_members, _thumbprint, b64url_encode

__all__ = [
    "JKT_LENGTH",
    "MAX_PROOF_BYTES",
    "PROOF_TYPE",
    "DPoPKey",
    "access_token_hash",
    "is_thumbprint",
    "normalize_htu",
    "thumbprint",
]

PROOF_TYPE = "dpop+jwt"
MAX_PROOF_BYTES = 4096  # a proof of ours is ~400 bytes (ES256 ~520); checked before decoding
JKT_LENGTH = 43  # base64url of a SHA-256 digest, no padding
_JKT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]").fullmatch  # canonical: low bits zero
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def thumbprint(key: PublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public key (the ``jkt`` of RFC 9449 §6.1)."""
    return _thumbprint(_required_members(key.alg, key.key))


def is_thumbprint(value: object) -> bool:
    """True for a canonical base64url SHA-256 thumbprint (43 characters)."""
    return isinstance(value, str) and _JKT(value) is not None


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the token's ASCII bytes."""
    return b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


def _percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else f"%{match.group(1).upper()}"


def normalize_htu(url: str) -> str:
    """``url`` as ``htu`` compares (RFC 9449 §4.3, RFC 3986 §6.2.2-6.2.3): query and fragment
    dropped, scheme and host lower case, the default port dropped, an empty path as ``/``,
    percent-escapes of unreserved characters decoded and the others' hex in upper case.

    :raises ValueError: not an absolute http(s) URL with a host, or one with user info.
    """
    if not isinstance(url, str) or not url.isascii() or not url.isprintable():
        raise ValueError("expected an ASCII URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower case, brackets of an IPv6 literal removed
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        raise ValueError("expected an absolute http(s) URL with a host and no user info")
    port = parts.port  # ValueError when not a number in range
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(_percent, parts.path) if "%" in parts.path else parts.path
    return f"{scheme}://{authority}{path or '/'}"


def _no_key(why: str) -> NoReturn:
    raise ConfigError(f"DPoP key: {why}", expected="a private Ed25519 or P-256 JWK", found=why)


class DPoPKey:
    """A DPoP key pair, held in memory only: it signs the proofs of one agent process.

    Nothing here writes the private key anywhere; ``repr`` shows the thumbprint
    alone and the object cannot be pickled. ``to_private_jwk`` exists for one
    purpose: handing the key to a child process through an inherited pipe
    (``agentsudo run --dpop``).
    """

    __slots__ = ("_signing", "jkt", "public_jwk", "_head")

    def __init__(self, signing: SigningKey) -> None:
        self._signing = signing
        members = _required_members(signing.alg, signing.key.public_key())
        self.public_jwk: dict[str, str] = dict(members)
        self.jkt = _thumbprint(members)
        header = {"typ": PROOF_TYPE, "alg": signing.alg, "jwk": self.public_jwk}
        self._head = b64url_encode(_DUMPS(header).encode("ascii"))

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoPKey:
        """A fresh key pair: ``ES256`` (P-256, the default) or ``EdDSA`` (Ed25519).

        ES256 by default: every DPoP implementation supports it (RFC 9449's examples,
        authorization servers' ``dpop_signing_alg_values_supported``), and a service
        checks a P-256 signature faster than an Ed25519 one with OpenSSL (~45 against
        ~60 µs here), once per request.

        :raises ConfigError: another algorithm.
        """
        return cls(SigningKey.generate(alg))

    @classmethod
    def from_private_jwk(cls, jwk: Mapping[str, Any]) -> DPoPKey:
        """The key a parent handed over (``to_private_jwk``), checked strictly.

        :raises ConfigError: not a private Ed25519 or P-256 JWK whose public part matches.
        """
        if not isinstance(jwk, Mapping):
            _no_key("expected a JSON object")
        kty, crv = jwk.get("kty"), jwk.get("crv")
        d = _field(jwk, "d")
        private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
        try:
            if kty == "OKP" and crv == "Ed25519" and len(d) == 32:
                private = ed25519.Ed25519PrivateKey.from_private_bytes(d)
            elif kty == "EC" and crv == "P-256" and len(d) == 32:
                private = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
            else:
                _no_key(f"expected OKP/Ed25519 or EC/P-256 with a 32-byte d, found {kty}/{crv}")
        except ValueError:
            _no_key("not a valid private key")
        key = cls(SigningKey.from_object(private))
        given = {name: jwk.get(name) for name in key.public_jwk}
        if given != key.public_jwk:
            _no_key("its public members do not match its private key")
        return key

    def to_private_jwk(self) -> dict[str, str]:
        """The private key as a JWK, for a child process's inherited pipe and nothing else."""
        signing = self._signing.key
        if isinstance(signing, ed25519.Ed25519PrivateKey):
            from cryptography.hazmat.primitives import serialization

            raw = signing.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        else:
            raw = signing.private_numbers().private_value.to_bytes(32, "big")
        return {**self.public_jwk, "d": b64url_encode(raw)}

    @property
    def alg(self) -> str:
        """``EdDSA`` or ``ES256``."""
        return self._signing.alg

    def proof(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        """A fresh proof for one request: ``htm``, ``htu``, ``iat``, a random ``jti``;
        ``ath`` when ``token`` is given, ``nonce`` when the server sent one.

        :raises ValueError: ``url`` is not an absolute http(s) URL.
        """
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": normalize_htu(url),
            "iat": int(time.time() if now is None else now),
        }
        if token is not None:
            claims["ath"] = access_token_hash(token)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = f"{self._head}.{b64url_encode(_DUMPS(claims).encode('ascii'))}"
        signature = self._signing.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, jkt={self.jkt!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DPoPKey is never serialized: it lives in its process's memory only")


def _field(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value.isascii() or "=" in value:
        _no_key(f"expected {name!r} as base64url text")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        _no_key(f"expected {name!r} as base64url text")
    if b64url_encode(raw) != value:
        _no_key(f"expected {name!r} as canonical base64url")
    return raw

"""Signing and verifying keys: Ed25519 (``EdDSA``) and P-256 (``ES256``).

    signing = SigningKey.generate("EdDSA")
    signature = signing.sign(b"header.payload")
    signing.public.verify(b"header.payload", signature)   # True

Keys are parsed once into ``cryptography`` objects. The algorithm belongs to
the key, never to a token. A JWK is converted strictly: only the two key types
we sign with, with exact field sizes and a canonical point on the curve; an
Ed25519 key of small order (the identity among them) is refused, since a
signature can be forged against it without any private key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ..errors import ConfigError

__all__ = ["ALGORITHMS", "Algorithm", "PublicKey", "SigningKey", "b64url_encode"]

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256")
_ES256_HASH = ec.ECDSA(hashes.SHA256())
_PublicObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
_PrivateObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_field(jwk: dict[str, Any], name: str, size: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or "=" in value:
        raise ConfigError(f"JWK field {name!r}: expected base64url text, found {value!r}")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError as exc:
        raise ConfigError(f"JWK field {name!r}: expected base64url text") from exc
    if len(raw) != size or b64url_encode(raw) != value:
        raise ConfigError(f"JWK field {name!r}: expected {size} bytes, found {len(raw)}")
    return raw


# Ed25519 (RFC 8032 §5.1): -x^2 + y^2 = 1 + d x^2 y^2 over GF(p). A public key is y (little
# endian, 255 bits) with the sign of x in the top bit.
_ED25519_P = 2**255 - 19
_ED25519_D = -121665 * pow(121666, -1, _ED25519_P) % _ED25519_P
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1


def _ed25519_refusal(raw: bytes) -> str | None:
    """Why this Ed25519 public key encoding is not an honest key, or ``None`` when it is.

    Refused: a non-canonical ``y`` (at or above p), a ``y`` with no ``x`` on the curve,
    and the eight points of small order (the identity among them), against which a
    signature can be forged for any message without a private key.

    Small order, from the curve equation: ``x = 0`` gives ``y = 1`` (the identity) and
    ``y = -1`` (order 2); ``y = 0`` gives ``x^2 = -1`` (order 4); doubling ``(x, y)`` gives
    ``y' = (x^2 + y^2) / (1 - d x^2 y^2)``, which is 0 (an order-4 point, so ``(x, y)`` has
    order 8) exactly when ``x^2 = -y^2``, that is, on the curve, when ``d y^4 + 2 y^2 - 1 = 0``.
    """
    p, d = _ED25519_P, _ED25519_D
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)  # the top bit is the sign of x
    if y >= p:
        return "a non-canonical point encoding"
    y2 = y * y % p
    if y in (0, 1, p - 1) or (d * y2 * y2 + 2 * y2 - 1) % p == 0:
        return "a point of small order"
    x2 = (y2 - 1) * pow(d * y2 + 1, -1, p) % p  # never 0 here: only y = +-1 have x = 0
    if pow(x2, (p - 1) // 2, p) != 1:  # Euler's criterion: x^2 has no square root
        return "a point that is not on the curve"
    return None


def _check_ed25519(raw: bytes, kid: str | None) -> bytes:
    refusal = _ed25519_refusal(raw)
    if refusal is not None:
        raise ConfigError(
            f"{f'JWK {kid}' if kid else 'public key'}: refusing an Ed25519 key that is {refusal}",
            expected="a canonical Ed25519 point on the curve, not of small order",
            found=refusal,
        )
    return raw


def _thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint: SHA-256 of the required members, sorted, no spaces."""
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode("ascii")
    return b64url_encode(hashlib.sha256(canonical).digest())


def _required_members(alg: Algorithm, key: _PublicObject) -> dict[str, str]:
    if alg == "EdDSA":
        assert isinstance(key, ed25519.Ed25519PublicKey)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    assert isinstance(key, ec.EllipticCurvePublicKey)
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def _algorithm_of(key: object) -> Algorithm:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ES256"
    raise ConfigError(
        f"expected an Ed25519 or P-256 key, found {type(key).__name__}",
        expected="Ed25519 or P-256",
        found=type(key).__name__,
    )


@dataclass(frozen=True, repr=False)
class PublicKey:
    """A verifying key: its ``kid``, its algorithm and the parsed key object."""

    kid: str
    alg: Algorithm
    key: _PublicObject

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid!r}, alg={self.alg!r})"

    @classmethod
    def from_object(cls, key: _PublicObject, *, kid: str | None = None) -> PublicKey:
        """Wrap a ``cryptography`` public key; ``kid`` defaults to its RFC 7638 thumbprint.

        :raises ConfigError: not an Ed25519 or P-256 key, or an Ed25519 key of small order.
        """
        alg = _algorithm_of(key)
        if isinstance(key, ed25519.Ed25519PublicKey):
            _check_ed25519(
                key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), kid
            )
        return cls(kid or _thumbprint(_required_members(alg, key)), alg, key)

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> PublicKey:
        """Parse one JWK of ours strictly.

        :raises ConfigError: anything but an Ed25519 or P-256 signing key with a ``kid``.
        """
        if not isinstance(jwk, dict):
            raise ConfigError("expected a JWK object")
        kid, alg, kty = jwk.get("kid"), jwk.get("alg"), jwk.get("kty")
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise ConfigError(f"JWK: expected a 'kid' of 1 to 128 characters, found {kid!r}")
        if any(private in jwk for private in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ConfigError(f"JWK {kid}: a public key set must not hold private key material")
        key: _PublicObject
        try:
            if alg == "EdDSA" and kty == "OKP" and jwk.get("crv") == "Ed25519":
                raw = _check_ed25519(_b64url_field(jwk, "x", 32), kid)
                key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            elif alg == "ES256" and kty == "EC" and jwk.get("crv") == "P-256":
                x = int.from_bytes(_b64url_field(jwk, "x", 32), "big")
                y = int.from_bytes(_b64url_field(jwk, "y", 32), "big")
                if x >= _P256_P or y >= _P256_P:  # cryptography reduces them modulo p
                    raise ConfigError(
                        f"JWK {kid}: expected P-256 coordinates below the field prime",
                        expected="x, y < p",
                        found="a coordinate at or above p",
                    )
                # cryptography refuses a point that is not on the curve (ValueError)
                key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            else:
                raise ConfigError(
                    f"JWK {kid}: expected EdDSA/OKP/Ed25519 or ES256/EC/P-256, "
                    f"found {alg}/{kty}/{jwk.get('crv')}",
                    expected=ALGORITHMS,
                    found=alg,
                )
        except ValueError as exc:
            raise ConfigError(f"JWK {kid}: not a valid public key") from exc
        return cls(kid, alg, key)

    def to_jwk(self) -> dict[str, str]:
        """This key as a public JWK with ``kid``, ``alg`` and ``use: sig``."""
        members = _required_members(self.alg, self.key)
        return {"kid": self.kid, "alg": self.alg, "use": "sig", **members}

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's JWS signature over ``signing_input``."""
        if len(signature) != 64:
            return False
        try:
            if self.alg == "EdDSA":
                self.key.verify(signature, signing_input)  # type: ignore[call-arg]
            else:
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                der = encode_dss_signature(r, s)
                self.key.verify(der, signing_input, _ES256_HASH)  # type: ignore[call-arg]
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private signing key. Its ``repr`` shows the ``kid`` and nothing secret."""

    kid: str
    alg: Algorithm
    key: _PrivateObject

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"

    @classmethod
    def generate(cls, alg: str = "EdDSA") -> SigningKey:
        """A fresh key; its ``kid`` is the RFC 7638 thumbprint of the public key.

        :raises ConfigError: for an algorithm other than ``EdDSA`` or ``ES256``.
        """
        private: _PrivateObject
        if alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ConfigError(
                f"expected an algorithm in {', '.join(ALGORITHMS)}, found {alg!r}",
                expected=ALGORITHMS,
                found=alg,
            )
        return cls.from_object(private)

    @classmethod
    def from_object(cls, key: _PrivateObject, *, kid: str | None = None) -> SigningKey:
        """Wrap a ``cryptography`` private key."""
        alg = _algorithm_of(key)
        public = PublicKey.from_object(key.public_key(), kid=kid)
        return cls(public.kid, alg, key)

    @classmethod
    def from_pem(cls, pem: bytes, *, kid: str | None = None) -> SigningKey:
        """Load an unencrypted PKCS#8 PEM private key.

        :raises ConfigError: not a PEM private key of a supported type.
        """
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError("expected an unencrypted PKCS#8 PEM private key") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(f"expected an Ed25519 or P-256 key, found {type(key).__name__}")
        return cls.from_object(key, kid=kid)

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted; write it only to a 0600 file."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public(self) -> PublicKey:
        """The matching public key, same ``kid``."""
        return PublicKey(self.kid, self.alg, self.key.public_key())

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature (raw 64 bytes for both algorithms)."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(signing_input)
        r, s = decode_dss_signature(self.key.sign(signing_input, _ES256_HASH))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

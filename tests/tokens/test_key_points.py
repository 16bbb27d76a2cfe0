"""Public keys that no honest signer has are refused when a JWKS is loaded.

Ed25519: the eight points of small order (the identity among them), with any
encoding, canonical or not. Against such a key a signature can be forged with
no private key at all: with the identity as the key, ``R = identity, S = 0``
verifies for every message (OpenSSL checks no order). So a JWKS holding one
would let anyone mint tokens. Also refused: an encoding of ``y`` at or above
the field prime, and a ``y`` for which no ``x`` exists (not on the curve).

The small-order points are derived here from the group structure, not
listed by hand: the curve has ``8 * L`` points (``L`` the prime order of the
base point), so ``[L] Q`` lies in the 8-torsion for every point ``Q``, and
for some ``Q`` it has order 8 and generates it. Arithmetic in affine
coordinates, straight from the twisted Edwards addition law (RFC 8032 §5.1.4).

P-256: a coordinate at or above the field prime (which cryptography would
reduce, accepting a second encoding of a point) and points off the curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agentsudo_tokens import ConfigError, JwksFile, KeySet, PublicKey, SigningKey
from agentsudo_tokens.tokens.keys import b64url_encode

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 (2 is not a square mod P)
IDENTITY = (0, 1)

Point = tuple[int, int]


def add(a: Point, b: Point) -> Point:
    """The twisted Edwards addition law for -x^2 + y^2 = 1 + d x^2 y^2 (complete on Ed25519)."""
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def multiply(k: int, point: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = add(result, point)
        point = add(point, point)
        k >>= 1
    return result


def x_for(y: int) -> int | None:
    """An x with (x, y) on the curve, or None (P = 5 mod 8: a square root by exponentiation)."""
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if x * x % P != x2:
        x = x * SQRT_M1 % P
    return x if x * x % P == x2 else None


def on_curve(point: Point) -> bool:
    x, y = point
    return (-x * x + y * y - 1 - D * x * x * y * y) % P == 0


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def order(point: Point) -> int:
    for n in (1, 2, 4, 8):
        if multiply(n, point) == IDENTITY:
            return n
    raise AssertionError("not in the 8-torsion")


def torsion_points() -> list[Point]:
    """The eight points of order dividing 8: multiples of one point of order 8."""
    y = 2
    while True:
        x = x_for(y)
        if x is not None:
            candidate = multiply(L, (x, y))
            if order(candidate) == 8:
                break
        y += 1
    points = [multiply(k, candidate) for k in range(8)]
    assert all(on_curve(point) for point in points)
    assert len(set(points)) == 8 and points[0] == IDENTITY
    return points


TORSION = torsion_points()
SMALL_ORDER = {
    f"order-{order(point)}-{encode(point).hex()[:6]}..{encode(point).hex()[-2:]}": encode(point)
    for point in TORSION
}
# The same points encoded non-canonically: y + P (for the y that allow it), or x = 0 with its
# sign bit set (x = 0 has no negative: RFC 8032 §5.1.3 says decoding fails).
NON_CANONICAL = {
    "identity-y-plus-p": (1 + P).to_bytes(32, "little"),
    "order-4-y-plus-p": (0 + P).to_bytes(32, "little"),
    "order-4-y-plus-p-sign": (0 + P | 1 << 255).to_bytes(32, "little"),
    "identity-sign-bit": (1 | 1 << 255).to_bytes(32, "little"),
    "order-2-sign-bit": (P - 1 | 1 << 255).to_bytes(32, "little"),
    "y-all-ones": (2**255 - 1).to_bytes(32, "little"),
}


def _not_on_curve() -> bytes:
    y = 2
    while x_for(y) is not None:
        y += 1
    return y.to_bytes(32, "little")


def jwk(raw: bytes, kid: str = "k1") -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": kid,
        "x": b64url_encode(raw),
    }


def test_the_derivation_finds_the_textbook_points() -> None:
    encodings = set(SMALL_ORDER.values())
    assert bytes([1]) + bytes(31) in encodings  # the identity, (0, 1)
    assert (P - 1).to_bytes(32, "little") in encodings  # (0, -1), order 2
    assert bytes(32) in encodings  # (sqrt(-1), 0) with x even, order 4
    assert sorted(order(point) for point in TORSION) == [1, 2, 4, 4, 8, 8, 8, 8]


@pytest.mark.parametrize("raw", list(SMALL_ORDER.values()), ids=list(SMALL_ORDER))
def test_a_jwks_with_a_small_order_ed25519_key_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError, match="small order"):
        KeySet.from_dict({"keys": [jwk(raw)]})


@pytest.mark.parametrize("raw", list(SMALL_ORDER.values()), ids=list(SMALL_ORDER))
def test_a_jwks_file_with_a_small_order_key_next_to_a_good_one_is_refused(
    tmp_path: Path, raw: bytes
) -> None:
    good = SigningKey.generate("EdDSA").public.to_jwk()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [good, jwk(raw, "evil")]}))
    with pytest.raises(
        ConfigError, match="JWK evil: refusing an Ed25519 key that is a point of small order"
    ):
        JwksFile(path)


@pytest.mark.parametrize("raw", list(SMALL_ORDER.values()), ids=list(SMALL_ORDER))
def test_wrapping_a_small_order_key_object_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError, match="small order"):
        PublicKey.from_object(ed25519.Ed25519PublicKey.from_public_bytes(raw))


@pytest.mark.parametrize("raw", list(NON_CANONICAL.values()), ids=list(NON_CANONICAL))
def test_a_non_canonical_encoding_of_a_small_order_point_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError, match="non-canonical|small order"):
        KeySet.from_dict({"keys": [jwk(raw)]})


def test_an_ed25519_key_off_the_curve_is_refused() -> None:
    with pytest.raises(ConfigError, match="not on the curve"):
        KeySet.from_dict({"keys": [jwk(_not_on_curve())]})


def test_honest_keys_pass_the_checks() -> None:
    for _ in range(200):
        public = SigningKey.generate("EdDSA").public
        assert KeySet.from_dict({"keys": [public.to_jwk()]})[public.kid].kid == public.kid


def _forged_token(kid: str) -> str:
    """Claims of the forger's choosing and the signature that verifies under the identity."""
    now = int(time.time())
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    claims = {
        "iss": "agentsudo",
        "sub": "Mallory",
        "aud": "agentsudo",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "forged-0123456789abcdef",
        "scope": "**",
    }
    signing_input = ".".join(b64url_encode(json.dumps(part).encode()) for part in (header, claims))
    signature = encode(IDENTITY) + bytes(32)  # R = identity, S = 0
    return f"{signing_input}.{b64url_encode(signature)}"


def test_agentsudo_verify_refuses_the_identity_key_that_would_accept_a_forgery(
    tmp_path: Path,
) -> None:
    """With the identity key trusted, any claims verified; now the JWKS itself is refused."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(encode(IDENTITY), "forger")]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_JWKS"] = str(path)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "agentsudo"), "verify", _forged_token("forger")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert "refusing an Ed25519 key that is a point of small order" in proc.stderr


# --- P-256 ------------------------------------------------------------------------------

P256 = 2**256 - 2**224 + 2**192 + 2**96 - 1
B256 = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def p256_jwk(x: int, y: int) -> dict[str, str]:
    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "kid": "k1",
        "x": b64url_encode(x.to_bytes(32, "big")),
        "y": b64url_encode(y.to_bytes(32, "big")),
    }


def _p256_point_with_small_x() -> tuple[int, int]:
    """A point whose x + P still fits in 32 bytes (P = 3 mod 4: square root by exponentiation)."""
    for x in range(100):
        rhs = (x**3 - 3 * x + B256) % P256
        y = pow(rhs, (P256 + 1) // 4, P256)
        if y * y % P256 == rhs:
            return x, y
    raise AssertionError("no small x")


def test_a_p256_coordinate_at_or_above_the_prime_is_refused() -> None:
    x, y = _p256_point_with_small_x()
    assert KeySet.from_dict({"keys": [p256_jwk(x, y)]})  # the canonical point is fine
    with pytest.raises(ConfigError, match="below the field prime"):
        KeySet.from_dict({"keys": [p256_jwk(x + P256, y)]})


@pytest.mark.parametrize(("dx", "dy"), [(0, 1), (1, 0)], ids=["y-plus-1", "x-plus-1"])
def test_a_p256_point_off_the_curve_is_refused(dx: int, dy: int) -> None:
    x, y = _p256_point_with_small_x()
    with pytest.raises(ConfigError, match="not a valid public key"):
        KeySet.from_dict({"keys": [p256_jwk(x + dx, y + dy)]})


def test_the_p256_origin_is_refused() -> None:
    """(0, 0) is not on P-256; JWK cannot spell the point at infinity, and P-256 has cofactor 1."""
    with pytest.raises(ConfigError, match="not a valid public key"):
        KeySet.from_dict({"keys": [p256_jwk(0, 0)]})

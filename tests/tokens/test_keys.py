"""Signing and verifying keys, JWK conversion and key ids."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agentsudo_tokens import ALGORITHMS, ConfigError, PublicKey, SigningKey
from agentsudo_tokens.tokens.keys import b64url_encode

# RFC 8037, appendix A.2 and A.3: an Ed25519 public key and its RFC 7638 thumbprint.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
# RFC 8037, appendix A.1: the matching private key.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_algorithms() -> None:
    assert ALGORITHMS == ("EdDSA", "ES256")


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_generate_sign_verify(alg: str) -> None:
    key = SigningKey.generate(alg)
    assert key.alg == alg == key.public.alg
    assert key.kid == key.public.kid
    signature = key.sign(b"header.payload")
    assert len(signature) == 64
    assert key.public.verify(b"header.payload", signature) is True
    assert key.public.verify(b"header.payloaD", signature) is False
    assert key.public.verify(b"header.payload", signature[:-1]) is False
    assert key.public.verify(b"header.payload", signature + b"\x00") is False
    assert key.public.verify(b"header.payload", bytes(64)) is False
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert key.public.verify(b"header.payload", flipped) is False
    other = SigningKey.generate(alg)
    assert other.kid != key.kid
    assert other.public.verify(b"header.payload", signature) is False


def test_es256_signature_is_raw_r_and_s() -> None:
    key = SigningKey.generate("ES256")
    signature = key.sign(b"data")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    assert isinstance(key.key, ec.EllipticCurvePrivateKey)
    key.key.public_key().verify(encode_dss_signature(r, s), b"data", ec.ECDSA(hashes.SHA256()))


def test_es256_verify_refuses_out_of_range_r_and_s() -> None:
    key = SigningKey.generate("ES256")
    assert key.public.verify(b"data", b"\xff" * 64) is False
    assert key.public.verify(b"data", bytes(32) + key.sign(b"data")[32:]) is False


def test_generate_refuses_other_algorithms() -> None:
    for alg in ("HS256", "RS256", "none", "eddsa", "ES384"):
        with pytest.raises(ConfigError):
            SigningKey.generate(alg)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_jwk_round_trip(alg: str) -> None:
    key = SigningKey.generate(alg)
    jwk = key.public.to_jwk()
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == (key.kid, alg, "sig")
    assert "d" not in jwk
    if alg == "EdDSA":
        assert (jwk["kty"], jwk["crv"], len(_unb64(jwk["x"]))) == ("OKP", "Ed25519", 32)
        assert set(jwk) == {"kid", "alg", "use", "kty", "crv", "x"}
    else:
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
        assert len(_unb64(jwk["x"])) == len(_unb64(jwk["y"])) == 32
        assert set(jwk) == {"kid", "alg", "use", "kty", "crv", "x", "y"}
    parsed = PublicKey.from_jwk(json.loads(json.dumps(jwk)))
    assert parsed == key.public
    assert parsed.to_jwk() == jwk
    assert parsed.verify(b"m", key.sign(b"m"))


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_pem_round_trip(alg: str) -> None:
    key = SigningKey.generate(alg)
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    loaded = SigningKey.from_pem(pem)
    assert (loaded.kid, loaded.alg) == (key.kid, key.alg)
    assert key.public.verify(b"m", loaded.sign(b"m"))


def test_kid_is_the_rfc7638_thumbprint_of_rfc8037() -> None:
    public = ed25519.Ed25519PublicKey.from_public_bytes(_unb64(RFC8037_X))
    assert PublicKey.from_object(public).kid == RFC8037_THUMBPRINT
    private = ed25519.Ed25519PrivateKey.from_private_bytes(_unb64(RFC8037_D))
    signing = SigningKey.from_object(private)
    assert signing.kid == RFC8037_THUMBPRINT
    assert signing.public.to_jwk()["x"] == RFC8037_X


def test_rfc8037_signature_vector() -> None:
    """RFC 8037 A.4: the JWS signature over "Example of Ed25519 signing"."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(_unb64(RFC8037_D))
    signing_input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
    expected = (
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )
    signature = SigningKey.from_object(private).sign(signing_input)
    assert b64url_encode(signature) == expected
    assert PublicKey.from_object(private.public_key()).verify(signing_input, signature)


def test_es256_kid_is_the_thumbprint_of_crv_kty_x_y() -> None:
    key = SigningKey.generate("ES256")
    jwk = key.public.to_jwk()
    canonical = '{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'.format(**jwk)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    assert key.kid == base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def test_an_explicit_kid_is_kept() -> None:
    key = SigningKey.from_object(ed25519.Ed25519PrivateKey.generate(), kid="my-key")
    assert key.kid == key.public.kid == "my-key"


def _ed_jwk(**changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = {
        "kid": "k1",
        "alg": "EdDSA",
        "use": "sig",
        "kty": "OKP",
        "crv": "Ed25519",
        "x": RFC8037_X,
    }
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def _ec_jwk(**changes: Any) -> dict[str, Any]:
    jwk = dict(SigningKey.generate("ES256").public.to_jwk(), kid="k2")
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def _off_curve() -> dict[str, Any]:
    jwk = _ec_jwk()
    y = int.from_bytes(_unb64(jwk["y"]), "big")
    return _ec_jwk(y=b64url_encode(((y + 1) % (2**256)).to_bytes(32, "big")))


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param(_ed_jwk(d=RFC8037_D), id="ed-private-d"),
        pytest.param(_ec_jwk(d=RFC8037_D), id="ec-private-d"),
        pytest.param(_ed_jwk(k="c2VjcmV0"), id="symmetric-k"),
        pytest.param(_ed_jwk(p="AQAB"), id="rsa-private-p"),
        pytest.param(_ed_jwk(crv="Ed448"), id="crv-ed448"),
        pytest.param(_ed_jwk(crv="X25519"), id="crv-x25519"),
        pytest.param(_ec_jwk(crv="P-384"), id="crv-p384"),
        pytest.param(_ec_jwk(crv="secp256k1"), id="crv-secp256k1"),
        pytest.param(_ed_jwk(kty="EC"), id="ed-with-kty-ec"),
        pytest.param(_ec_jwk(kty="OKP"), id="ec-with-kty-okp"),
        pytest.param(_ed_jwk(alg="ES256"), id="ed-with-alg-es256"),
        pytest.param(_ec_jwk(alg="EdDSA"), id="ec-with-alg-eddsa"),
        pytest.param(_ed_jwk(alg="none"), id="alg-none"),
        pytest.param(_ed_jwk(alg=None), id="alg-missing"),
        pytest.param(_ed_jwk(x=b64url_encode(bytes(31))), id="x-31-bytes"),
        pytest.param(_ed_jwk(x=b64url_encode(bytes(33))), id="x-33-bytes"),
        pytest.param(_ed_jwk(x=RFC8037_X + "="), id="x-padded"),
        pytest.param(_ed_jwk(x=RFC8037_X[:-1] + "p"), id="x-noncanonical"),
        pytest.param(_ed_jwk(x="!" * 43), id="x-not-base64"),
        pytest.param(_ed_jwk(x=None), id="x-missing"),
        pytest.param(_ed_jwk(x=12), id="x-not-a-string"),
        pytest.param(_ec_jwk(y=None), id="ec-y-missing"),
        pytest.param(_ec_jwk(y=b64url_encode(bytes(31))), id="ec-y-31-bytes"),
        pytest.param(_off_curve(), id="ec-point-off-curve"),
        pytest.param(_ec_jwk(x=b64url_encode(bytes(32)), y=b64url_encode(bytes(32))), id="ec-zero"),
        pytest.param(_ed_jwk(kid=None), id="kid-missing"),
        pytest.param(_ed_jwk(kid=""), id="kid-empty"),
        pytest.param(_ed_jwk(kid="k" * 129), id="kid-too-long"),
        pytest.param(_ed_jwk(kid=5), id="kid-not-a-string"),
        pytest.param(["not", "a", "dict"], id="not-an-object"),
    ],
)
def test_from_jwk_is_strict(jwk: Any) -> None:
    with pytest.raises(ConfigError) as info:
        PublicKey.from_jwk(jwk)
    assert "\n" not in str(info.value)
    assert RFC8037_D not in str(info.value)


def test_from_jwk_accepts_the_rfc8037_key() -> None:
    key = PublicKey.from_jwk(_ed_jwk(kid=RFC8037_THUMBPRINT))
    assert (key.kid, key.alg) == (RFC8037_THUMBPRINT, "EdDSA")


def test_unsupported_key_objects_are_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p384 = ec.generate_private_key(ec.SECP384R1())
    for private in (rsa_key, p384):
        with pytest.raises(ConfigError):
            SigningKey.from_object(private)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            PublicKey.from_object(private.public_key())  # type: ignore[arg-type]
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(ConfigError):
            SigningKey.from_pem(pem)


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
    ],
    ids=["empty", "garbage", "bad-body", "public-key", "encrypted"],
)
def test_from_pem_refuses_what_is_not_an_unencrypted_private_key(pem: bytes) -> None:
    with pytest.raises(ConfigError):
        SigningKey.from_pem(pem)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_reprs_hold_no_key_material(alg: str) -> None:
    key = SigningKey.generate(alg)
    body = "".join(key.to_pem().decode("ascii").splitlines()[1:-1])
    jwk = key.public.to_jwk()
    for text in (repr(key), str(key), repr(key.public), str(key.public)):
        assert key.kid in text
        assert body[:40] not in text and body[-40:] not in text
        assert jwk["x"] not in text
    assert repr(key) == f"SigningKey(kid={key.kid!r}, alg={alg!r})"
    assert repr(key.public) == f"PublicKey(kid={key.kid!r}, alg={alg!r})"


def test_b64url_encode_has_no_padding() -> None:
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_encode(b"a") == "YQ"
    assert b64url_encode(b"") == ""

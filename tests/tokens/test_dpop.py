"""DPoP (RFC 9449): keys, thumbprints, proofs, bound tokens, and every way a proof is refused.

Proofs are made by ``DPoPKey`` or forged by hand (``forge``) with real keys;
each hostile proof in the table expects its exact error class and a one-line
reason that never holds the proof or the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, hmac

from agentsudo_tokens import Issuer, KeyDirectory, Verifier
from agentsudo_tokens.errors import (
    ConfigError,
    DPoPNonceError,
    InvalidDPoPProofError,
    MalformedTokenError,
    ReplayedDPoPProofError,
    StoreUnavailableError,
    TokenBindingError,
)
from agentsudo_tokens.state.replay import MemoryReplayCache
from agentsudo_tokens.tokens.dpop import (
    MAX_PROOF_BYTES,
    DPoPKey,
    access_token_hash,
    normalize_htu,
    thumbprint,
)
from agentsudo_tokens.tokens.dpop_nonce import DPoPNonces
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier
from agentsudo_tokens.tokens.keys import PublicKey, SigningKey

NOW = 1_800_000_000
URL = "https://billing.example/refunds"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(part: dict[str, Any]) -> str:
    return b64(json.dumps(part, separators=(",", ":")).encode())


@dataclass
class Forge:
    """Hand-made proofs: any header and claims, signed by any key (or not at all)."""

    key: DPoPKey
    token: str

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "jti": "j-" + b64(hashlib.sha256(repr(changes).encode()).digest())[:16],
            "htm": "POST",
            "htu": URL,
            "iat": NOW,
            "ath": access_token_hash(self.token),
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {
            "typ": "dpop+jwt",
            "alg": self.key.alg,
            "jwk": self.key.public_jwk,
        }
        header.update(changes)
        return {k: v for k, v in header.items() if v is not None}

    def proof(
        self,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        signer: SigningKey | DPoPKey | None = None,
    ) -> str:
        signing_input = f"{encode(header or self.header())}.{encode(claims or self.claims())}"
        signer = signer or self.key
        signing = signer._signing if isinstance(signer, DPoPKey) else signer
        return f"{signing_input}.{b64(signing.sign(signing_input.encode()))}"


@pytest.fixture(params=["EdDSA", "ES256"])
def dpop_key(request: pytest.FixtureRequest) -> DPoPKey:
    return DPoPKey.generate(request.param)


@pytest.fixture
def bound(issuer: Issuer, dpop_key: DPoPKey) -> str:
    return issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt, now=NOW).token


@pytest.fixture
def forge(dpop_key: DPoPKey, bound: str) -> Forge:
    return Forge(dpop_key, bound)


def proofs(**options: Any) -> ProofVerifier:
    return ProofVerifier(clock=lambda: NOW + 1, **options)


def token_verifier(key_dir: KeyDirectory) -> Verifier:
    return Verifier(key_dir.public_keys(), clock=lambda: NOW + 1)


# -- keys and thumbprints ----------------------------------------------------------------------


def test_thumbprint_matches_the_rfc_8037_example() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    key = PublicKey.from_jwk({**jwk, "kid": "k", "alg": "EdDSA"})
    assert thumbprint(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_a_key_shows_its_thumbprint_and_never_its_secret(dpop_key: DPoPKey) -> None:
    private = dpop_key.to_private_jwk()["d"]
    assert repr(dpop_key) == f"DPoPKey(alg={dpop_key.alg!r}, jkt={dpop_key.jkt!r})"
    assert private not in repr(dpop_key) and "d" not in dpop_key.public_jwk
    with pytest.raises(TypeError, match="never serialized"):
        pickle.dumps(dpop_key)
    assert thumbprint(PublicKey.from_jwk({**dpop_key.public_jwk, "kid": "x", "alg": dpop_key.alg}))
    assert dpop_key.jkt == thumbprint(
        PublicKey.from_jwk({**dpop_key.public_jwk, "kid": "x", "alg": dpop_key.alg})
    )


def test_a_key_handed_over_as_a_private_jwk_is_the_same_key(dpop_key: DPoPKey) -> None:
    again = DPoPKey.from_private_jwk(dpop_key.to_private_jwk())
    assert again.jkt == dpop_key.jkt and again.alg == dpop_key.alg
    proof = again.proof("GET", URL, now=NOW)
    assert proofs().verify(proof, method="GET", url=URL).jkt == dpop_key.jkt


@pytest.mark.parametrize(
    "change",
    [
        {"d": "AAAA"},  # too short
        {"d": "not base64!"},
        {"x": DPoPKey.generate().public_jwk["x"]},  # another key's public part
        {"kty": "oct"},
        {"crv": "P-384"},
    ],
    ids=["short-d", "bad-d", "other-public-part", "oct", "other-curve"],
)
def test_a_bad_private_jwk_is_refused(change: dict[str, str]) -> None:
    jwk = {**DPoPKey.generate().to_private_jwk(), **change}
    with pytest.raises(ConfigError, match="^DPoP key: "):
        DPoPKey.from_private_jwk(jwk)


def test_only_the_two_algorithms_make_keys() -> None:
    with pytest.raises(ConfigError):
        DPoPKey.generate("RS256")


# -- htu -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://billing.example/refunds?x=1#top", "https://billing.example/refunds"),
        ("HTTPS://Billing.EXAMPLE:443/refunds", "https://billing.example/refunds"),
        ("http://127.0.0.1:80", "http://127.0.0.1/"),
        ("http://127.0.0.1:8000/a%7eb/%2f", "http://127.0.0.1:8000/a~b/%2F"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
def test_htu_is_normalized(url: str, normal: str) -> None:
    assert normalize_htu(url) == normal


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "/relative", "https://user:pw@host/", "https://host:99999/", "http://h/é"]
)
def test_htu_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_htu(url)


# -- proofs --------------------------------------------------------------------------------------


def test_a_proof_says_what_rfc_9449_asks(dpop_key: DPoPKey, bound: str) -> None:
    proof = dpop_key.proof("POST", URL + "?page=2#x", token=bound, nonce="n-1", now=NOW)
    header = jwt.get_unverified_header(proof)
    assert header == {"typ": "dpop+jwt", "alg": dpop_key.alg, "jwk": dpop_key.public_jwk}
    claims = jwt.decode(  # PyJWT checks the signature with the key the proof carries
        proof,
        jwt.PyJWK.from_dict(header["jwk"], algorithm=dpop_key.alg).key,
        [dpop_key.alg],
        options={"verify_iat": False},
    )
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce"}
    assert claims["htm"] == "POST" and claims["htu"] == URL and claims["iat"] == NOW
    assert claims["ath"] == b64(hashlib.sha256(bound.encode()).digest())
    assert claims["nonce"] == "n-1" and len(claims["jti"]) >= 22
    other = dpop_key.proof("POST", URL, token=bound, now=NOW)
    assert jwt.decode(other, options={"verify_signature": False})["jti"] != claims["jti"]


def test_a_bound_token_carries_cnf_jkt_and_verifies(
    key_dir: KeyDirectory, dpop_key: DPoPKey, bound: str
) -> None:
    claims = token_verifier(key_dir).verify(bound)
    assert claims.jkt == dpop_key.jkt
    assert dict(claims.claims)["cnf"] == {"jkt": dpop_key.jkt}
    public = key_dir.public_keys()[claims.kid].key
    options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    assert jwt.decode(bound, public, ["EdDSA"], audience="agentsudo", options=options)


def test_a_plain_token_has_no_jkt(key_dir: KeyDirectory, issuer: Issuer) -> None:
    token = issuer.issue("SupportBot", ["read:orders"], now=NOW).token
    assert token_verifier(key_dir).verify(token).jkt is None


@pytest.mark.parametrize("jkt", ["abc", "x" * 43 + "=", 43 * "é", "A" * 44, ""])
def test_the_issuer_refuses_a_jkt_that_is_no_thumbprint(issuer: Issuer, jkt: str) -> None:
    with pytest.raises(ConfigError, match="jkt: expected"):
        issuer.issue("SupportBot", ["read:orders"], jkt=jkt)


@pytest.mark.parametrize(
    "cnf",
    [
        {"jkt": "short"},
        {"jkt": 42},
        {"jkt": "A" * 43, "x5t#S256": "A" * 43},
        {"jwk": {"kty": "OKP"}},
        ["jkt"],
        "A" * 43,
    ],
    ids=["short-jkt", "int-jkt", "extra-member", "jwk-confirmation", "list", "string"],
)
def test_a_binding_the_verifier_cannot_check_is_refused(key_dir: KeyDirectory, cnf: object) -> None:
    from agentsudo_tokens.tokens.jws import encode as jws_encode

    signing = key_dir.signing_key()
    claims = dict(Issuer(signing).issue("SupportBot", ["read:orders"], now=NOW).claims)
    token = jws_encode(
        {"alg": signing.alg, "typ": "at+jwt", "kid": signing.kid}, {**claims, "cnf": cnf}, signing
    )
    with pytest.raises(MalformedTokenError, match="claim 'cnf'"):
        token_verifier(key_dir).verify(token)


def test_a_good_proof_is_accepted_once(forge: Forge, bound: str, dpop_key: DPoPKey) -> None:
    checker = proofs()
    proof = dpop_key.proof("POST", URL + "?q=1", token=bound, now=NOW)
    checked = checker.verify(proof, method="POST", url=URL, token=bound, jkt=dpop_key.jkt)
    assert checked.jkt == dpop_key.jkt and checked.issued_at == NOW
    with pytest.raises(ReplayedDPoPProofError, match="used before"):
        checker.verify(proof, method="POST", url=URL, token=bound, jkt=dpop_key.jkt)


def _hs256(forge: Forge) -> str:
    """HS256 "signed" with the public key's bytes: the classic algorithm confusion."""
    signing_input = f"{encode(forge.header(alg='HS256'))}.{encode(forge.claims())}"
    mac = hmac.HMAC(json.dumps(forge.key.public_jwk).encode(), hashes.SHA256())
    mac.update(signing_input.encode())
    return f"{signing_input}.{b64(mac.finalize())}"


def _none(forge: Forge) -> str:
    return f"{encode(forge.header(alg='none'))}.{encode(forge.claims())}.AAAA"


def _private_jwk(forge: Forge) -> str:
    return forge.proof(header=forge.header(jwk=forge.key.to_private_jwk()))


def _small_order_jwk(forge: Forge) -> str:
    identity = b64((1).to_bytes(32, "little"))  # y = 1: the identity point
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": identity}
    return forge.proof(header=forge.header(alg="EdDSA", jwk=jwk))


def _off_curve(forge: Forge) -> str:
    jwk = {**DPoPKey.generate("ES256").public_jwk, "y": b64((5).to_bytes(32, "big"))}
    return forge.proof(header=forge.header(alg="ES256", jwk=jwk))


def _mismatched_alg(forge: Forge) -> str:
    other = "ES256" if forge.key.alg == "EdDSA" else "EdDSA"
    return forge.proof(header=forge.header(alg=other))


def _other_signer(forge: Forge) -> str:
    return forge.proof(signer=DPoPKey.generate(forge.key.alg))


def _tampered(forge: Forge) -> str:
    head, _, signature = forge.proof().split(".")
    return f"{head}.{encode(forge.claims(htm='GET'))}.{signature}"


def _duplicate_key(forge: Forge) -> str:
    body = json.dumps(forge.claims(), separators=(",", ":"))[:-1] + ',"htm":"GET"}'
    signing_input = f"{encode(forge.header())}.{b64(body.encode())}"
    return f"{signing_input}.{b64(forge.key._signing.sign(signing_input.encode()))}"


@dataclass(frozen=True)
class Case:
    make: Callable[[Forge], object]
    error: type[Exception]
    reason: str  # a fragment of the one-line message


HOSTILE = {
    "alg-none": Case(_none, InvalidDPoPProofError, "expected alg EdDSA or ES256"),
    "alg-none-unsigned": Case(
        lambda f: _none(f).removesuffix("AAAA"), InvalidDPoPProofError, "3 non-empty parts"
    ),
    "alg-hs256-keyed-with-the-public-key": Case(_hs256, InvalidDPoPProofError, "found 'HS256'"),
    "alg-rs256": Case(
        lambda f: f.proof(header=f.header(alg="RS256")), InvalidDPoPProofError, "'RS256'"
    ),
    "alg-of-another-key-type": Case(_mismatched_alg, InvalidDPoPProofError, "not a valid"),
    "typ-jwt": Case(lambda f: f.proof(header=f.header(typ="JWT")), InvalidDPoPProofError, "typ"),
    "typ-missing": Case(
        lambda f: f.proof(header=f.header(typ=None)), InvalidDPoPProofError, "missing typ"
    ),
    "jwk-missing": Case(
        lambda f: f.proof(header=f.header(jwk=None)), InvalidDPoPProofError, "missing jwk"
    ),
    "header-kid": Case(
        lambda f: f.proof(header=f.header(kid="k1")), InvalidDPoPProofError, "'kid'"
    ),
    "header-jku": Case(
        lambda f: f.proof(header=f.header(jku="https://evil.example/jwks")),
        InvalidDPoPProofError,
        "'jku'",
    ),
    "jwk-with-private-part": Case(_private_jwk, InvalidDPoPProofError, "private key material"),
    "jwk-symmetric": Case(
        lambda f: f.proof(header=f.header(jwk={"kty": "oct", "k": "c2VjcmV0"})),
        InvalidDPoPProofError,
        "private key material",
    ),
    "jwk-rsa": Case(
        lambda f: f.proof(header=f.header(jwk={"kty": "RSA", "n": "AQAB", "e": "AQAB"})),
        InvalidDPoPProofError,
        "kty OKP or EC",
    ),
    "jwk-small-order-ed25519": Case(_small_order_jwk, InvalidDPoPProofError, "not a valid"),
    "jwk-point-off-the-curve": Case(_off_curve, InvalidDPoPProofError, "not a valid"),
    "jwk-extra-member": Case(
        lambda f: f.proof(header=f.header(jwk={**f.key.public_jwk, "x5u": "https://e/x"})),
        InvalidDPoPProofError,
        "unexpected jwk members",
    ),
    "signed-by-another-key": Case(_other_signer, InvalidDPoPProofError, "signature does not"),
    "tampered-payload": Case(_tampered, InvalidDPoPProofError, "method"),
    "wrong-method": Case(
        lambda f: f.proof(claims=f.claims(htm="GET")), InvalidDPoPProofError, "method 'GET'"
    ),
    "method-in-lower-case": Case(
        lambda f: f.proof(claims=f.claims(htm="post")), InvalidDPoPProofError, "method"
    ),
    "wrong-url": Case(
        lambda f: f.proof(claims=f.claims(htu="https://billing.example/orders")),
        InvalidDPoPProofError,
        "made for URL",
    ),
    "wrong-host": Case(
        lambda f: f.proof(claims=f.claims(htu="https://evil.example/refunds")),
        InvalidDPoPProofError,
        "made for URL",
    ),
    "htu-not-a-url": Case(
        lambda f: f.proof(claims=f.claims(htu=["x"])), InvalidDPoPProofError, "made for URL"
    ),
    "wrong-ath": Case(
        lambda f: f.proof(claims=f.claims(ath=access_token_hash(f.token + "x"))),
        InvalidDPoPProofError,
        "ath is not the hash",
    ),
    "no-ath": Case(lambda f: f.proof(claims=f.claims(ath=None)), InvalidDPoPProofError, "ath"),
    "no-jti": Case(lambda f: f.proof(claims=f.claims(jti=None)), InvalidDPoPProofError, "jti"),
    "jti-not-a-string": Case(
        lambda f: f.proof(claims=f.claims(jti=7)), InvalidDPoPProofError, "expected jti"
    ),
    "iat-too-old": Case(
        lambda f: f.proof(claims=f.claims(iat=NOW - 120)), InvalidDPoPProofError, "old"
    ),
    "iat-in-the-future": Case(
        lambda f: f.proof(claims=f.claims(iat=NOW + 120)), InvalidDPoPProofError, "future"
    ),
    "iat-a-float": Case(
        lambda f: f.proof(claims=f.claims(iat=NOW + 0.5)), InvalidDPoPProofError, "integer"
    ),
    "iat-a-string": Case(
        lambda f: f.proof(claims=f.claims(iat=str(NOW))), InvalidDPoPProofError, "integer"
    ),
    "iat-too-big-for-a-float": Case(
        lambda f: f.proof(claims=f.claims(iat=10**400)), InvalidDPoPProofError, "0 to 2**53"
    ),
    "iat-2**53": Case(
        lambda f: f.proof(claims=f.claims(iat=2**53)), InvalidDPoPProofError, "0 to 2**53"
    ),
    "iat-negative": Case(
        lambda f: f.proof(claims=f.claims(iat=-1)), InvalidDPoPProofError, "0 to 2**53"
    ),
    "duplicate-claim": Case(_duplicate_key, InvalidDPoPProofError, "unique JSON keys"),
    "oversized": Case(
        lambda f: f.proof(claims=f.claims(pad="x" * MAX_PROOF_BYTES)),
        InvalidDPoPProofError,
        f"at most {MAX_PROOF_BYTES} bytes",
    ),
    "two-parts": Case(lambda f: ".".join(f.proof().split(".")[:2]), InvalidDPoPProofError, "3"),
    "padded-base64": Case(lambda f: f.proof() + "=", InvalidDPoPProofError, "base64url"),
    "not-json": Case(
        lambda f: f"{b64(b'not json')}.{encode(f.claims())}.AAAA", InvalidDPoPProofError, "JSON"
    ),
    "non-ascii": Case(lambda f: f.proof() + "é", InvalidDPoPProofError, "ASCII"),
    "not-a-string": Case(lambda f: f.proof().encode(), InvalidDPoPProofError, "a string"),
    "empty": Case(lambda f: "", InvalidDPoPProofError, "3"),
    "key-other-than-the-tokens": Case(
        lambda f: Forge(DPoPKey.generate(f.key.alg), f.token).proof(),
        TokenBindingError,
        "another key",
    ),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_proof_is_refused_with_its_reason(forge: Forge, bound: str, case: Case) -> None:
    proof = case.make(forge)
    with pytest.raises(case.error) as caught:
        proofs().verify(proof, method="POST", url=URL, token=bound, jkt=forge.key.jkt)
    message = str(caught.value)
    assert case.reason in message, message
    assert "\n" not in message and len(message) < 300
    assert bound not in message
    assert not isinstance(proof, str) or len(proof) < 40 or proof[:40] not in message


def test_a_refused_proof_is_not_recorded_as_used(forge: Forge, bound: str) -> None:
    checker = proofs()
    good = forge.proof()
    with pytest.raises(InvalidDPoPProofError):
        checker.verify(good, method="GET", url=URL, token=bound, jkt=forge.key.jkt)
    assert checker.verify(good, method="POST", url=URL, token=bound, jkt=forge.key.jkt)


# -- the binding rule, for a request -------------------------------------------------------------


def test_the_binding_rule(
    key_dir: KeyDirectory, issuer: Issuer, bound: str, dpop_key: DPoPKey
) -> None:
    verifier, checker = token_verifier(key_dir), proofs()
    claims = verifier.verify(bound)
    plain = issuer.issue("SupportBot", ["read:orders"], now=NOW).token
    proof = dpop_key.proof("POST", URL, token=bound, now=NOW)

    def check(scheme: str, token: str, found: list[str]) -> object:
        return checker.check_request(
            verifier.verify(token), scheme=scheme, token=token, proofs=found, method="POST", url=URL
        )

    assert check("Bearer", plain, []) is None  # a plain token: as it always was
    with pytest.raises(TokenBindingError, match="bound to a key .* not as a Bearer token"):
        check("Bearer", bound, [proof])
    with pytest.raises(TokenBindingError, match="not bound to a key"):
        check("DPoP", plain, [dpop_key.proof("POST", URL, token=plain, now=NOW)])
    with pytest.raises(InvalidDPoPProofError, match="exactly one DPoP header, found 0"):
        check("DPoP", bound, [])
    with pytest.raises(InvalidDPoPProofError, match="exactly one DPoP header, found 2"):
        check("dpop", bound, [proof, proof])
    assert checker.check_request(
        claims, scheme="dpop", token=bound, proofs=[proof], method="POST", url=URL
    )


# -- nonces --------------------------------------------------------------------------------------


def test_a_service_that_demands_nonces(forge: Forge, bound: str, dpop_key: DPoPKey) -> None:
    clock = [float(NOW)]
    nonces = DPoPNonces(lifetime=60, clock=lambda: clock[0])
    checker = ProofVerifier(nonces=nonces, clock=lambda: clock[0])

    def verify(proof: str) -> object:
        return checker.verify(proof, method="POST", url=URL, token=bound, jkt=dpop_key.jkt)

    with pytest.raises(DPoPNonceError, match="requires a nonce"):
        verify(forge.proof())
    nonce = nonces.current()
    assert verify(forge.proof(claims=forge.claims(nonce=nonce)))
    with pytest.raises(DPoPNonceError, match="not current"):
        verify(forge.proof(claims=forge.claims(nonce="made-up", jti="other")))
    clock[0] += 60  # the next slot: the nonce still holds
    assert verify(dpop_key.proof("POST", URL, token=bound, nonce=nonce, now=clock[0]))
    clock[0] += 60  # two slots on: stale
    with pytest.raises(DPoPNonceError, match="not current"):
        verify(dpop_key.proof("POST", URL, token=bound, nonce=nonce, now=clock[0]))
    other = DPoPNonces(lifetime=60, clock=lambda: clock[0])
    assert not nonces.accepts(other.current())  # another secret: another service's nonce


def test_nonce_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        DPoPNonces(secret=b"short")
    with pytest.raises(ConfigError):
        DPoPNonces(lifetime=0)
    with pytest.raises(ConfigError):
        ProofVerifier(window=0)


# -- the replay cache ----------------------------------------------------------------------------


def test_the_memory_replay_cache_is_bounded_and_fails_closed() -> None:
    clock = [0.0]
    cache = MemoryReplayCache(3, clock=lambda: clock[0])
    assert all(cache.first_use(f"k{i}", expires_at=10) for i in range(3))
    assert not cache.first_use("k0", expires_at=10)
    with pytest.raises(StoreUnavailableError, match="refusing rather than forgetting"):
        cache.first_use("k3", expires_at=10)
    clock[0] = 11  # every entry expired: room again, and an expired id is new again
    assert cache.first_use("k3", expires_at=20) and cache.first_use("k0", expires_at=20)
    assert len(cache) == 2

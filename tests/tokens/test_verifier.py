"""The verifier: one table of hostile tokens, then the happy path, leeway and the cache.

Hostile tokens are forged by hand and, wherever the check under test is not the
signature, signed with the key directory's real private key: each one differs
from a valid token by exactly one defect, so the error class it gets names
that defect and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from agentsudo_tokens import (
    BadSignatureError,
    ConfigError,
    ExpiredTokenError,
    InvalidTokenError,
    Issuer,
    JwksFile,
    KeyDirectory,
    MalformedTokenError,
    NotYetValidTokenError,
    PublicKey,
    SigningKey,
    TokenLifetimeError,
    UnknownKeyError,
    UnverifiedClaims,
    VerifiedClaims,
    Verifier,
    WrongAudienceError,
    WrongIssuerError,
    decode_unverified,
)
from agentsudo_tokens.tokens.jws import MAX_TOKEN_BYTES

AGENT = "SupportBot"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_DROP = object()  # a claim or header value meaning "leave this member out"


def b64(data: bytes) -> str:
    """Base64url without padding, as RFC 7515 wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _apply(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for name, value in changes.items():
        if value is _DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


@dataclass
class Forge:
    """Builds tokens by hand, signed with the key directory's real private key."""

    key: SigningKey
    issuer: Issuer
    now: int

    def header(self, **changes: Any) -> dict[str, Any]:
        return _apply({"alg": self.key.alg, "typ": "at+jwt", "kid": self.key.kid}, changes)

    def claims(self, **changes: Any) -> dict[str, Any]:
        base = {
            "iss": "agentsudo",
            "sub": AGENT,
            "aud": "agentsudo",
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + 900,
            "jti": "jti-0123456789abcdef",
            "scope": "read:orders write:refunds",
        }
        return _apply(base, changes)

    def sign(self, head: str, body: str, key: SigningKey | None = None) -> str:
        """``head.body.signature`` with a real signature over exactly these two parts."""
        signature = (key or self.key).sign(f"{head}.{body}".encode("ascii"))
        return f"{head}.{body}.{b64(signature)}"

    def token(self, header: dict[str, Any] | None = None, **claim_changes: Any) -> str:
        head = b64json(self.header() if header is None else header)
        return self.sign(head, b64json(self.claims(**claim_changes)))

    def raw(self, *, header: bytes | None = None, payload: bytes | None = None) -> str:
        """A signed token whose header or payload are these exact bytes."""
        head = b64json(self.header()) if header is None else b64(header)
        body = b64json(self.claims()) if payload is None else b64(payload)
        return self.sign(head, body)

    def claims_json(self, **changes: Any) -> bytes:
        return json.dumps(self.claims(**changes), separators=(",", ":")).encode("utf-8")

    def unsigned(self, alg: str, signature: str) -> str:
        head = b64json(self.header(alg=alg))
        return f"{head}.{b64json(self.claims())}.{signature}"

    def hmac_signed(self, secret: bytes) -> str:
        head = b64json(self.header(alg="HS256"))
        body = b64json(self.claims())
        mac = hmac.new(secret, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(mac)}"

    def public_jwk_bytes(self) -> bytes:
        return json.dumps(self.key.public.to_jwk()).encode("utf-8")

    def public_pem(self) -> bytes:
        return self.key.public.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


# Builders for encoding tricks: with tweak=False each yields a token that verifies
# (see test_encoding_controls_verify), so the tweak is the only defect.


def _replace_part(token: str, index: int, new: str) -> str:
    parts = token.split(".")
    parts[index] = new
    return ".".join(parts)


def tampered_payload(f: Forge, tweak: bool = True) -> str:
    token = f.token()
    if not tweak:
        return token
    wider = b64json(f.claims(scope="read:orders write:refunds admin:**"))
    return _replace_part(token, 1, wider)


def tampered_signature(f: Forge, tweak: bool = True) -> str:
    head, body, _ = f.token().split(".")
    signature = bytearray(f.key.sign(f"{head}.{body}".encode("ascii")))
    if tweak:
        signature[10] ^= 0x01
    return f"{head}.{body}.{b64(bytes(signature))}"


def signature_of_length(f: Forge, size: int) -> str:
    head, body, _ = f.token().split(".")
    signature = f.key.sign(f"{head}.{body}".encode("ascii"))
    signature = (signature + signature)[:size]
    return f"{head}.{body}.{b64(signature)}"


def padded(f: Forge, part: int, tweak: bool = True) -> str:
    """A part with '=' padding, signed over the padded text where the padding is not on it."""
    for jti in ("jti-0123456789abcdef", "jti-0123456789abcdefg", "jti-0123456789abcdefgh"):
        head, body = b64json(f.header()), b64json(f.claims(jti=jti))
        if len(body) % 4 and len(head) % 4:
            break
    if not tweak:
        return f.sign(head, body)
    assert len(head) % 4 and len(body) % 4 and len(f.key.sign(b"x")) % 3  # padding is due
    if part == 0:
        return f.sign(head + "=" * (-len(head) % 4), body)
    if part == 1:
        return f.sign(head, body + "=" * (-len(body) % 4))
    token = f.sign(head, body)
    return token + "=" * (-len(token.rsplit(".", 1)[1]) % 4)


def _noncanonical(text: str) -> str:
    """Flip an unused low bit of the last character: same bytes, different text."""
    assert len(text) % 4 in (2, 3)
    last = _ALPHABET.index(text[-1])
    return text[:-1] + _ALPHABET[last ^ 1]


def noncanonical(f: Forge, part: int, tweak: bool = True) -> str:
    for jti in ("jti-0123456789abcdef", "jti-0123456789abcdefg", "jti-0123456789abcdefgh"):
        head, body = b64json(f.header()), b64json(f.claims(jti=jti))
        if len(body) % 4:
            break
    if part == 1:
        return f.sign(head, _noncanonical(body) if tweak else body)
    token = f.sign(head, body)
    head_body, signature = token.rsplit(".", 1)  # 64 bytes: 86 characters, 4 unused bits
    return f"{head_body}.{_noncanonical(signature) if tweak else signature}"


def standard_alphabet(f: Forge, char: str, tweak: bool = True) -> str:
    """A payload in the standard base64 alphabet ('+' or '/' where base64url has '-' or '_')."""
    urlsafe = {"+": "-", "/": "_"}[char]
    filler = {"+": ">>>>>>", "/": "??????"}[char]  # '>>>' encodes to Pj4+, '???' to Pz8/
    for pad in range(3):
        body = b64json(f.claims(note="x" * pad + filler))  # an extra claim: any text goes
        if urlsafe in body:
            break
    assert urlsafe in body
    head = b64json(f.header())
    return f.sign(head, body.replace(urlsafe, char) if tweak else body)


def duplicate_claim(f: Forge, tweak: bool = True) -> str:
    text = f.claims_json(sub="Mallory")
    if tweak:  # the same JSON text with a second "sub": which one wins is anyone's guess
        text = text[:-1] + f',"sub":"{AGENT}"}}'.encode("ascii")
    return f.raw(payload=text)


def duplicate_header(f: Forge, tweak: bool = True) -> str:
    text = json.dumps(f.header(), separators=(",", ":")).encode("ascii")
    if tweak:
        text = text[:-1] + b',"alg":"none"}'
    return f.raw(header=text)


def oversized(f: Forge, tweak: bool = True) -> str:
    """The longest valid token that fits in MAX_TOKEN_BYTES, or the shortest that does not."""
    size = (MAX_TOKEN_BYTES - len(f.token(pad=""))) * 3 // 4 - 4  # a little short of the bound
    assert len(f.token(pad="x" * size)) <= MAX_TOKEN_BYTES
    while len(f.token(pad="x" * size)) <= MAX_TOKEN_BYTES:
        size += 1
    return f.token(pad="x" * (size if tweak else size - 1))


def other_es256_signed(f: Forge) -> str:
    """Header alg ES256 with the EdDSA key's kid, really signed by a P-256 key."""
    head = b64json(f.header(alg="ES256"))
    return f.sign(head, b64json(f.claims()), key=SigningKey.generate("ES256"))


def unknown_kid(f: Forge) -> str:
    stranger = SigningKey.generate("EdDSA")
    head = b64json(f.header(kid=stranger.kid))
    return f.sign(head, b64json(f.claims()), key=stranger)


def nested_header(f: Forge) -> str:
    return f.raw(header=b'{"alg":' + b"[" * 2000 + b"]" * 2000 + b"}")


Build = Callable[[Forge], object]


def case(id: str, build: Build, expected: type[InvalidTokenError]) -> Any:
    return pytest.param(build, expected, id=id)


M = MalformedTokenError
HOSTILE = [
    # -- algorithm confusion: the algorithm comes from the key, never the token
    case("alg-none-empty-signature", lambda f: f.unsigned("none", ""), M),
    case("alg-None-empty-signature", lambda f: f.unsigned("None", ""), M),
    case("alg-NONE-empty-signature", lambda f: f.unsigned("NONE", ""), M),
    case("alg-none-with-signature", lambda f: f.unsigned("none", b64(b"x" * 64)), M),
    case("alg-None-with-signature", lambda f: f.unsigned("None", b64(b"x" * 64)), M),
    case("alg-NONE-with-signature", lambda f: f.unsigned("NONE", b64(b"x" * 64)), M),
    case("alg-none-signed-with-real-key", lambda f: f.token(f.header(alg="none")), M),
    case("hs256-keyed-with-public-jwk", lambda f: f.hmac_signed(f.public_jwk_bytes()), M),
    case("hs256-keyed-with-public-pem", lambda f: f.hmac_signed(f.public_pem()), M),
    case("hs256-keyed-with-raw-x", lambda f: f.hmac_signed(f.key.public.to_jwk()["x"].encode()), M),
    case("es256-header-on-eddsa-key", other_es256_signed, M),
    case("alg-eddsa-lowercase", lambda f: f.token(f.header(alg="eddsa")), M),
    case("alg-not-a-string", lambda f: f.token(f.header(alg=["EdDSA"])), M),
    # -- signature
    case("tampered-payload", tampered_payload, BadSignatureError),
    case("tampered-signature", tampered_signature, BadSignatureError),
    case("signature-63-bytes", lambda f: signature_of_length(f, 63), BadSignatureError),
    case("signature-65-bytes", lambda f: signature_of_length(f, 65), BadSignatureError),
    case("signature-128-bytes", lambda f: signature_of_length(f, 128), BadSignatureError),
    case("signature-1-byte", lambda f: signature_of_length(f, 1), BadSignatureError),
    case(
        "signed-by-other-key-same-kid",
        lambda f: f.sign(
            b64json(f.header()), b64json(f.claims()), key=SigningKey.generate("EdDSA")
        ),
        BadSignatureError,
    ),
    # -- key id
    case("unknown-kid", unknown_kid, UnknownKeyError),
    case("missing-kid", lambda f: f.token(f.header(kid=_DROP)), M),
    case("empty-kid", lambda f: f.token(f.header(kid="")), M),
    case("kid-not-a-string", lambda f: f.token(f.header(kid=7)), M),
    case("kid-too-long", lambda f: f.token(f.header(kid="k" * 129)), M),
    # -- header parameters beyond alg, typ, kid
    case("header-jku", lambda f: f.token(f.header(jku="https://evil.example/jwks")), M),
    case("header-x5u", lambda f: f.token(f.header(x5u="https://evil.example/cert")), M),
    case("header-jwk", lambda f: f.token(f.header(jwk=f.key.public.to_jwk())), M),
    case("header-crit", lambda f: f.token(f.header(crit=["exp"])), M),
    case("header-zip", lambda f: f.token(f.header(zip="DEF")), M),
    case("header-b64-false", lambda f: f.token(f.header(b64=False)), M),
    case("header-x5c", lambda f: f.token(f.header(x5c=["MIIB"])), M),
    case("header-missing-alg", lambda f: f.token(f.header(alg=_DROP)), M),
    case("typ-JWT", lambda f: f.token(f.header(typ="JWT")), M),
    case("typ-missing", lambda f: f.token(f.header(typ=_DROP)), M),
    case("typ-not-a-string", lambda f: f.token(f.header(typ=1)), M),
    case("header-is-array", lambda f: f.raw(header=b'["EdDSA"]'), M),
    case("header-deeply-nested", nested_header, M),
    case("header-duplicate-key", duplicate_header, M),
    # -- time window
    case(
        "expired",
        lambda f: f.issuer.issue(AGENT, ["read:orders"], now=time.time() - 3600).token,
        ExpiredTokenError,
    ),
    case("nbf-in-future", lambda f: f.token(nbf=f.now + 600), NotYetValidTokenError),
    case(
        "iat-in-future",
        lambda f: f.token(iat=f.now + 600, nbf=f.now, exp=f.now + 1200),
        NotYetValidTokenError,
    ),
    case("lifetime-over-max-ttl", lambda f: f.token(exp=f.now + 86400 + 1), TokenLifetimeError),
    case("exp-equals-iat", lambda f: f.token(exp=f.now), TokenLifetimeError),
    case("exp-before-iat", lambda f: f.token(exp=f.now - 1), TokenLifetimeError),
    # -- issuer and audience
    case("wrong-iss", lambda f: f.token(iss="someone-else"), WrongIssuerError),
    case("iss-differs-in-case", lambda f: f.token(iss="AgentSudo"), WrongIssuerError),
    case("wrong-aud-string", lambda f: f.token(aud="billing"), WrongAudienceError),
    case("wrong-aud-list", lambda f: f.token(aud=["billing", "shipping"]), WrongAudienceError),
    case("aud-empty-list", lambda f: f.token(aud=[]), M),
    case("aud-list-with-number", lambda f: f.token(aud=["agentsudo", 1]), M),
    case("aud-object", lambda f: f.token(aud={"agentsudo": True}), M),
    # -- required claims
    *[
        case(f"missing-{name}", lambda f, name=name: f.token(**{name: _DROP}), M)
        for name in ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope")
    ],
    # -- claim types and values
    case("exp-string", lambda f: f.token(exp=str(f.now + 900)), M),
    case("exp-float", lambda f: f.token(exp=f.now + 900.5), M),
    case("exp-float-integral", lambda f: f.token(exp=float(f.now + 900)), M),
    case("exp-bool", lambda f: f.token(exp=True), M),
    case("exp-null", lambda f: f.token(exp=None), M),
    case("exp-after-year-9999", lambda f: f.token(exp=253402300800), M),
    case("exp-huge", lambda f: f.token(exp=10**30), M),
    case("exp-negative", lambda f: f.token(exp=-1), M),
    case("iat-negative", lambda f: f.token(iat=-5, nbf=-5, exp=100), M),
    case("nbf-string", lambda f: f.token(nbf=str(f.now)), M),
    case("empty-sub", lambda f: f.token(sub=""), M),
    case("sub-not-a-string", lambda f: f.token(sub=42), M),
    case("empty-jti", lambda f: f.token(jti=""), M),
    case("jti-not-a-string", lambda f: f.token(jti=12345), M),
    case("empty-iss", lambda f: f.token(iss=""), M),
    case("cnf-claim-refused", lambda f: f.token(cnf={"jkt": "abc"}), M),
    # -- scope claim
    case("scope-array", lambda f: f.token(scope=["read:orders"]), M),
    case("scope-object", lambda f: f.token(scope={"read:orders": True}), M),
    case("scope-number", lambda f: f.token(scope=1), M),
    case("scope-null", lambda f: f.token(scope=None), M),
    case("scope-empty-string", lambda f: f.token(scope=""), M),
    case("scope-double-space", lambda f: f.token(scope="read:orders  write:refunds"), M),
    case("scope-leading-space", lambda f: f.token(scope=" read:orders"), M),
    case("scope-trailing-space", lambda f: f.token(scope="read:orders "), M),
    case("scope-comma-separated", lambda f: f.token(scope="read:orders,write:refunds"), M),
    case("scope-non-ascii-letter", lambda f: f.token(scope="read:órders"), M),
    case("scope-nbsp-separator", lambda f: f.token(scope="read:orders\u00a0write:refunds"), M),
    case("scope-tab-separator", lambda f: f.token(scope="read:orders\twrite:refunds"), M),
    case("scope-newline", lambda f: f.token(scope="read:orders\nwrite:refunds"), M),
    case("scope-fullwidth-colon", lambda f: f.token(scope="read\uff1aorders"), M),
    case("scope-star-inside-segment", lambda f: f.token(scope="re*d"), M),
    case("scope-double-star-not-last", lambda f: f.token(scope="**:orders"), M),
    case("scope-empty-segment", lambda f: f.token(scope="read::orders"), M),
    case("scope-question-mark", lambda f: f.token(scope="read:order?"), M),
    case("scope-brackets", lambda f: f.token(scope="read:[a-z]"), M),
    # -- sub: an agent name (ASCII identifier): nothing that forges a terminal line or looks
    #    like another agent. Each would verify without the grammar (see the controls).
    case("sub-esc-sequence", lambda f: f.token(sub="Support\x1b[2K\rBot"), M),
    case("sub-newline", lambda f: f.token(sub="SupportBot\nallowed"), M),
    case("sub-carriage-return", lambda f: f.token(sub="SupportBot\rAdmin"), M),
    case("sub-tab", lambda f: f.token(sub="Support\tBot"), M),
    case("sub-nul", lambda f: f.token(sub="Support\x00Bot"), M),
    case("sub-del", lambda f: f.token(sub="SupportBot\x7f"), M),
    case("sub-c1-csi", lambda f: f.token(sub="Support\x9bBot"), M),
    case("sub-bidi-override", lambda f: f.token(sub="Support\u202etoB"), M),
    case("sub-bidi-isolate", lambda f: f.token(sub="Support\u2066Bot"), M),
    case("sub-zero-width-space", lambda f: f.token(sub="Support\u200bBot"), M),
    case("sub-zero-width-joiner", lambda f: f.token(sub="Support\u200dBot"), M),
    case("sub-byte-order-mark", lambda f: f.token(sub="\ufeffSupportBot"), M),
    case("sub-line-separator", lambda f: f.token(sub="Support\u2028Bot"), M),
    case("sub-cyrillic-homoglyph", lambda f: f.token(sub="Supp\u043ertBot"), M),
    case("sub-fullwidth-letter", lambda f: f.token(sub="\uff33upportBot"), M),
    case("sub-combining-mark", lambda f: f.token(sub="Bo\u0308t"), M),
    case("sub-non-ascii-letter", lambda f: f.token(sub="B\u00f8t"), M),
    case("sub-space", lambda f: f.token(sub="Support Bot"), M),
    case("sub-nbsp", lambda f: f.token(sub="Support\u00a0Bot"), M),
    case("sub-leading-dash", lambda f: f.token(sub="-SupportBot"), M),
    case("sub-leading-dot", lambda f: f.token(sub=".SupportBot"), M),
    case("sub-slash", lambda f: f.token(sub="team/SupportBot"), M),
    case("sub-129-characters", lambda f: f.token(sub="x" * 129), M),
    case("sub-array", lambda f: f.token(sub=["SupportBot"]), M),
    # -- I-JSON (RFC 7493): no surrogate code point (reachable only as a \u escape, as
    #    json.dumps writes one) and no noncharacter, in any key or value, however deep
    case("lone-high-surrogate-in-extra-claim", lambda f: f.token(note="\ud800"), M),
    case("lone-low-surrogate-in-extra-claim", lambda f: f.token(note="x\udc00y"), M),
    case("reversed-surrogate-pair", lambda f: f.token(note="\ude00\ud83d"), M),
    case("high-surrogate-then-letter", lambda f: f.token(note="\ud83dA"), M),
    case("lone-surrogate-in-claim-name", lambda f: f.token(**{"note\udbff": 1}), M),
    case(
        "lone-surrogate-nested-deep",
        lambda f: f.token(act={"sub": "Planner", "act": {"sub": ["ok", {"k": "\udfff"}]}}),
        M,
    ),
    case(
        "lone-surrogate-nested-name",
        lambda f: f.token(act={"sub": "Planner", "x": [{"\ud800": True}]}),
        M,
    ),
    case("lone-surrogate-in-aud-list", lambda f: f.token(aud=["agentsudo", "\ud800"]), M),
    case("lone-surrogate-in-iss", lambda f: f.token(iss="agentsudo\ud800"), M),
    case("lone-surrogate-in-sub", lambda f: f.token(sub="SupportBot\ud800"), M),
    case("lone-surrogate-in-jti", lambda f: f.token(jti="jti-0123456789abcdef\ud800"), M),
    case("lone-surrogate-in-kid", lambda f: f.token(f.header(kid="\ud800")), M),
    case(
        "lone-surrogate-uppercase-escape",
        lambda f: f.raw(
            payload=f.claims_json(note="PLACEHOLDER").replace(b"PLACEHOLDER", b"\\uD800")
        ),
        M,
    ),
    case(
        "surrogate-encoded-in-utf8",  # CESU-8 style: invalid UTF-8 (already refused)
        lambda f: f.raw(
            payload=f.claims_json(note="PLACEHOLDER").replace(b"PLACEHOLDER", b"\xed\xa0\x80")
        ),
        M,
    ),
    case("noncharacter-uffff-escaped", lambda f: f.token(note="\uffff"), M),
    case("noncharacter-ufffe-escaped", lambda f: f.token(note="a\ufffeb"), M),
    case("noncharacter-ufdd0-escaped", lambda f: f.token(note="\ufdd0"), M),
    case("noncharacter-in-aud-list", lambda f: f.token(aud=["agentsudo", "\ufdef"]), M),
    case(
        "noncharacter-ufdd0-raw-utf8",
        lambda f: f.raw(
            payload=f.claims_json(note="PLACEHOLDER").replace(
                b"PLACEHOLDER", "\ufdd0".encode("utf-8")
            )
        ),
        M,
    ),
    case(
        "noncharacter-u10ffff-raw-utf8",
        lambda f: f.raw(
            payload=f.claims_json(note="PLACEHOLDER").replace(
                b"PLACEHOLDER", "\U0010ffff".encode("utf-8")
            )
        ),
        M,
    ),
    case(
        "noncharacter-u1fffe-as-surrogate-pair",
        lambda f: f.token(note="\U0001fffe"),  # json.dumps writes the pair \ud83f\udffe
        M,
    ),
    # -- JSON
    case("duplicate-claim-key", duplicate_claim, M),
    case(
        "payload-not-utf8",
        lambda f: f.raw(
            payload=f.claims_json(sub="PLACEHOLDER").replace(b"PLACEHOLDER", b"Bot\xff\xfe")
        ),
        M,
    ),
    case("payload-json-array", lambda f: f.raw(payload=b'["agentsudo"]'), M),
    case("payload-json-string", lambda f: f.raw(payload=b'"agentsudo"'), M),
    case("payload-not-json", lambda f: f.raw(payload=b"iss=agentsudo"), M),
    case(
        "payload-nan",
        lambda f: f.raw(payload=f.claims_json(exp="PLACEHOLDER").replace(b'"PLACEHOLDER"', b"NaN")),
        M,
    ),
    case(
        "payload-infinity",
        lambda f: f.raw(
            payload=f.claims_json(exp="PLACEHOLDER").replace(b'"PLACEHOLDER"', b"Infinity")
        ),
        M,
    ),
    case(
        "payload-minus-infinity",
        lambda f: f.raw(
            payload=f.claims_json(exp="PLACEHOLDER").replace(b'"PLACEHOLDER"', b"-Infinity")
        ),
        M,
    ),
    case("payload-trailing-garbage", lambda f: f.raw(payload=f.claims_json() + b"x"), M),
    case("payload-second-object", lambda f: f.raw(payload=f.claims_json() * 2), M),
    case("payload-trailing-space", lambda f: f.raw(payload=f.claims_json() + b" "), M),
    case("payload-trailing-newline", lambda f: f.raw(payload=f.claims_json() + b"\n"), M),
    case("payload-leading-space", lambda f: f.raw(payload=b" " + f.claims_json()), M),
    case("payload-utf8-bom", lambda f: f.raw(payload=b"\xef\xbb\xbf" + f.claims_json()), M),
    case("payload-truncated", lambda f: f.raw(payload=f.claims_json()[:-1]), M),
    # -- base64url
    case("header-padded", lambda f: padded(f, 0), M),
    case("payload-padded", lambda f: padded(f, 1), M),
    case("signature-padded", lambda f: padded(f, 2), M),
    case("payload-noncanonical-base64", lambda f: noncanonical(f, 1), M),
    case("signature-noncanonical-base64", lambda f: noncanonical(f, 2), M),
    case("payload-base64-plus", lambda f: standard_alphabet(f, "+"), M),
    case("payload-base64-slash", lambda f: standard_alphabet(f, "/"), M),
    case("payload-impossible-length", lambda f: f.sign(b64json(f.header()), "eyJhY"), M),
    case("payload-with-space", lambda f: f.sign(b64json(f.header()), "eyJh Yg"), M),
    case("non-ascii-token", lambda f: f.token().replace("e", "é", 1), M),
    # -- size and shape
    case("oversized-invalid-base64", lambda f: "!" * (MAX_TOKEN_BYTES + 1), M),
    case("oversized-valid-signature", oversized, M),
    case("oversized-many-dots", lambda f: "." * (MAX_TOKEN_BYTES + 1), M),
    case("two-parts", lambda f: f.token().rsplit(".", 1)[0], M),
    case("four-parts", lambda f: f.token() + "." + b64(b"x"), M),
    case("two-dots-only", lambda f: "..", M),
    case("empty-header-part", lambda f: "." + f.token().split(".", 1)[1], M),
    case("empty-payload-part", lambda f: _replace_part(f.token(), 1, ""), M),
    case("empty-signature-part", lambda f: _replace_part(f.token(), 2, ""), M),
    case("empty-string", lambda f: "", M),
    case("garbage", lambda f: "not a token at all", M),
    case("bearer-prefix", lambda f: "Bearer " + f.token(), M),
    case("surrounding-whitespace", lambda f: f.token() + "\n", M),
    # -- not a string at all
    case("bytes", lambda f: f.token().encode("ascii"), M),
    case("none", lambda f: None, M),
    case("int", lambda f: 12345, M),
    case("list", lambda f: f.token().split("."), M),
]


@pytest.fixture
def forge(key_dir: KeyDirectory, issuer: Issuer) -> Forge:
    return Forge(key_dir.signing_key(), issuer, int(time.time()))


def _assert_clean_message(err: InvalidTokenError, token: object) -> None:
    message = str(err)
    assert message
    assert "\n" not in message and "\r" not in message
    if isinstance(token, str):
        texts = (message, repr(err), repr(err.expected), repr(err.found))
        for piece in token.split("."):
            if len(piece) >= 8:  # shorter pieces could appear by chance ("none", "..")
                assert not any(piece in text for text in texts)


@pytest.mark.parametrize(("build", "expected"), HOSTILE)
def test_hostile_token_is_refused_with_its_exact_error(
    build: Build, expected: type[InvalidTokenError], forge: Forge, verifier: Verifier
) -> None:
    token = build(forge)
    with pytest.raises(expected) as info:
        verifier.verify(token)  # type: ignore[arg-type]
    assert type(info.value) is expected
    _assert_clean_message(info.value, token)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda f: f.token(), id="forge-default"),
        pytest.param(lambda f: f.raw(), id="forge-raw"),
        pytest.param(lambda f: tampered_payload(f, tweak=False), id="tampered-payload"),
        pytest.param(lambda f: tampered_signature(f, tweak=False), id="tampered-signature"),
        pytest.param(lambda f: padded(f, 0, tweak=False), id="padded"),
        pytest.param(lambda f: noncanonical(f, 1, tweak=False), id="noncanonical-payload"),
        pytest.param(lambda f: noncanonical(f, 2, tweak=False), id="noncanonical-signature"),
        pytest.param(lambda f: standard_alphabet(f, "+", tweak=False), id="alphabet-plus"),
        pytest.param(lambda f: standard_alphabet(f, "/", tweak=False), id="alphabet-slash"),
        pytest.param(lambda f: duplicate_claim(f, tweak=False), id="duplicate-claim"),
        pytest.param(lambda f: duplicate_header(f, tweak=False), id="duplicate-header"),
        pytest.param(lambda f: oversized(f, tweak=False), id="longest-token"),
        pytest.param(lambda f: f.token(f.header(typ="application/at+jwt")), id="typ-media-type"),
        pytest.param(lambda f: f.token(f.header(typ="AT+JWT")), id="typ-uppercase"),
        pytest.param(lambda f: f.token(exp=f.now + 86400), id="lifetime-exactly-max"),
        pytest.param(lambda f: f.token(aud=["billing", "agentsudo"]), id="aud-list"),
        pytest.param(lambda f: f.token(client_id="planner-app"), id="extra-standard-claim"),
        pytest.param(
            lambda f: f.token(act={"sub": "Planner"}, ancestors=["j-root"]), id="act-chain"
        ),
        pytest.param(lambda f: f.token(scope="read:* write:**"), id="wildcard-scopes"),
        pytest.param(lambda f: f.token(sub="support-bot@team.example"), id="sub-email-like"),
        pytest.param(lambda f: f.token(sub="svc:orders.v2_b"), id="sub-with-colon-dot"),
        pytest.param(lambda f: f.token(sub="x" * 128), id="sub-128-characters"),
        pytest.param(lambda f: f.token(sub="7"), id="sub-one-digit"),
        pytest.param(lambda f: f.token(note="\U0001f600"), id="escaped-surrogate-pair"),
        pytest.param(lambda f: f.token(note="\\ud800"), id="escaped-backslash-not-surrogate"),
        pytest.param(lambda f: f.token(note="B\u00f8t \u00e9t\u00e9"), id="escaped-non-ascii"),
        pytest.param(lambda f: f.token(note="\ufffd\ufdcf\ufdf0"), id="next-to-noncharacters"),
        pytest.param(
            lambda f: f.raw(
                payload=f.claims_json(note="PLACEHOLDER").replace(
                    b"PLACEHOLDER", "B\u00f8t \U0001f600 \ufffd".encode("utf-8")
                )
            ),
            id="raw-utf8-non-ascii",
        ),
    ],
)
def test_controls_for_the_hostile_builders_verify(
    build: Build, forge: Forge, verifier: Verifier
) -> None:
    """Each encoding trick, left out, gives a token that verifies: the trick is the defect."""
    claims = verifier.verify(build(forge))  # type: ignore[arg-type]
    assert isinstance(claims, VerifiedClaims) and claims.issuer == "agentsudo"


def test_the_size_bound_is_checked_before_any_decoding(verifier: Verifier) -> None:
    token = "!" * (MAX_TOKEN_BYTES + 1)  # not even base64: only the size check can name it
    with pytest.raises(MalformedTokenError) as info:
        verifier.verify(token)
    assert info.value.expected == MAX_TOKEN_BYTES
    assert info.value.found == MAX_TOKEN_BYTES + 1


def test_the_longest_token_is_exactly_at_the_bound(forge: Forge, verifier: Verifier) -> None:
    longest, too_long = oversized(forge, tweak=False), oversized(forge)
    assert MAX_TOKEN_BYTES - 2 <= len(longest) <= MAX_TOKEN_BYTES < len(too_long)
    assert verifier.verify(longest).claims["pad"].startswith("x")
    with pytest.raises(MalformedTokenError) as info:
        verifier.verify(too_long)
    assert info.value.found == len(too_long)


def test_errors_say_what_was_expected_and_found(forge: Forge, verifier: Verifier) -> None:
    with pytest.raises(WrongAudienceError) as aud:
        verifier.verify(forge.token(aud="billing"))
    assert (aud.value.expected, aud.value.found) == ("agentsudo", ("billing",))
    assert "'agentsudo'" in str(aud.value) and "'billing'" in str(aud.value)
    with pytest.raises(WrongIssuerError) as iss:
        verifier.verify(forge.token(iss="mallory"))
    assert (iss.value.expected, iss.value.found) == ("agentsudo", "mallory")
    with pytest.raises(UnknownKeyError) as kid:
        verifier.verify(unknown_kid(forge))
    assert kid.value.found != forge.key.kid
    with pytest.raises(MalformedTokenError) as alg:
        verifier.verify(forge.unsigned("none", b64(b"x" * 64)))
    assert (alg.value.expected, alg.value.found) == ("EdDSA", "none")


# -- the happy path ------------------------------------------------------------


def test_a_minted_token_verifies_with_its_claims(issuer: Issuer, verifier: Verifier) -> None:
    minted = issuer.issue(AGENT, ["read:orders", "write:refunds"], ttl=600)
    claims = verifier.verify(minted.token)
    assert isinstance(claims, VerifiedClaims)
    assert claims.issuer == "agentsudo"
    assert claims.subject == AGENT
    assert claims.audience == ("agentsudo",)
    assert claims.jti == minted.claims["jti"]
    assert claims.issued_at == claims.not_before == minted.claims["iat"]
    assert claims.expires_at == claims.issued_at + 600 == minted.claims["exp"]
    assert claims.ttl == 600
    assert claims.kid == issuer.key.kid and claims.alg == "EdDSA"
    assert claims.scopes.scopes == ("read:orders", "write:refunds")
    assert claims.scopes.allows("write:refunds")
    assert not claims.scopes.allows("write:orders")
    assert dict(claims.claims) == dict(minted.claims)
    with pytest.raises(TypeError):
        claims.claims["scope"] = "**"  # type: ignore[index]


def test_es256_keys_work_end_to_end(tmp_path: Any) -> None:
    keydir = KeyDirectory.init(tmp_path / "es", alg="ES256")
    minted = Issuer(keydir.signing_key()).issue(AGENT, "read:orders")
    assert minted.header["alg"] == "ES256"
    verifier = Verifier(JwksFile(keydir.jwks_path))
    claims = verifier.verify(minted.token)
    assert (claims.alg, claims.subject) == ("ES256", AGENT)
    head, body, signature = minted.token.split(".")
    forged_body = b64json({**minted.claims, "scope": "**"})
    with pytest.raises(BadSignatureError):
        verifier.verify(f"{head}.{forged_body}.{signature}")
    with pytest.raises(MalformedTokenError):  # EdDSA named in the header of an ES256 key
        verifier.verify(f"{b64json({**minted.header, 'alg': 'EdDSA'})}.{body}.{signature}")


def test_leeway_accepts_a_token_expired_moments_ago(key_dir: KeyDirectory, issuer: Issuer) -> None:
    now = 1_800_000_000
    token = issuer.issue(AGENT, "read:orders", ttl=900, now=now - 910).token  # exp = now - 10
    keys = key_dir.public_keys()
    assert Verifier(keys, clock=lambda: now).verify(token).expires_at == now - 10
    with pytest.raises(ExpiredTokenError) as info:
        Verifier(keys, leeway=0, clock=lambda: now).verify(token)
    assert info.value.found == now - 10
    with pytest.raises(ExpiredTokenError):  # the leeway itself has an end
        Verifier(keys, clock=lambda: now + 20).verify(token)


def test_leeway_applies_to_nbf_and_iat(forge: Forge, key_dir: KeyDirectory) -> None:
    keys = key_dir.public_keys()
    early = forge.token(iat=forge.now + 10, nbf=forge.now + 10, exp=forge.now + 900)
    assert Verifier(keys, clock=lambda: forge.now).verify(early).subject == AGENT
    with pytest.raises(NotYetValidTokenError):
        Verifier(keys, leeway=0, clock=lambda: forge.now).verify(early)


def test_the_audience_argument_overrides_the_verifiers(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue(AGENT, "read:orders", audience="billing").token
    with pytest.raises(WrongAudienceError):
        verifier.verify(token)
    assert verifier.verify(token, audience="billing").audience == ("billing",)
    with pytest.raises(WrongAudienceError):  # the cached result is not a pass for others
        verifier.verify(token, audience="shipping")


def test_a_list_audience_is_accepted_by_each_member(issuer: Issuer, key_dir: KeyDirectory) -> None:
    token = issuer.issue(AGENT, "read:orders", audience=["billing", "shipping"]).token
    for service in ("billing", "shipping"):
        claims = Verifier(key_dir.public_keys(), audience=service).verify(token)
        assert claims.audience == ("billing", "shipping")
    with pytest.raises(WrongAudienceError):
        Verifier(key_dir.public_keys(), audience="bill").verify(token)


def test_another_issuer_name_is_expected_when_configured(key_dir: KeyDirectory) -> None:
    token = Issuer(key_dir.signing_key(), issuer="corp").issue(AGENT, "read:orders").token
    assert Verifier(key_dir.public_keys(), issuer="corp").verify(token).issuer == "corp"
    with pytest.raises(WrongIssuerError):
        Verifier(key_dir.public_keys()).verify(token)


def test_max_ttl_of_the_verifier_is_its_own(key_dir: KeyDirectory) -> None:
    token = Issuer(key_dir.signing_key()).issue(AGENT, "read:orders", ttl=3600).token
    assert Verifier(key_dir.public_keys(), max_ttl=3600).verify(token).ttl == 3600
    with pytest.raises(TokenLifetimeError) as info:
        Verifier(key_dir.public_keys(), max_ttl=3599).verify(token)
    assert (info.value.expected, info.value.found) == (3599, 3600)


def test_from_jwks_dict(key_dir: KeyDirectory, issuer: Issuer) -> None:
    verifier = Verifier.from_jwks(key_dir.public_keys().to_dict(), audience="agentsudo")
    assert verifier.verify(issuer.issue(AGENT, "read:orders").token).subject == AGENT


# -- the cache of verified tokens ---------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_repeat_verify_returns_the_cached_result(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue(AGENT, "read:orders").token
    assert verifier.verify(token) is verifier.verify(token)


def test_with_cache_size_zero_every_verify_is_fresh(key_dir: KeyDirectory, issuer: Issuer) -> None:
    verifier = Verifier(key_dir.public_keys(), cache_size=0)
    token = issuer.issue(AGENT, "read:orders").token
    first, second = verifier.verify(token), verifier.verify(token)
    assert first == second and first is not second


def test_a_cached_token_expires(key_dir: KeyDirectory, issuer: Issuer) -> None:
    clock = Clock(1_800_000_000)
    verifier = Verifier(key_dir.public_keys(), clock=clock)
    token = issuer.issue(AGENT, "read:orders", ttl=60, now=clock.now).token
    first = verifier.verify(token)
    clock.now += 60 + 29  # within exp + leeway
    assert verifier.verify(token) is first
    clock.now += 1
    with pytest.raises(ExpiredTokenError):
        verifier.verify(token)
    with pytest.raises(ExpiredTokenError):  # and it stays refused
        verifier.verify(token)


def test_the_cache_is_bounded(key_dir: KeyDirectory, issuer: Issuer) -> None:
    verifier = Verifier(key_dir.public_keys(), cache_size=2)
    tokens = [issuer.issue(AGENT, "read:orders").token for _ in range(3)]
    first = [verifier.verify(token) for token in tokens]
    # the oldest entry made room for the third: verifying it again is a fresh result
    assert verifier.verify(tokens[2]) is first[2]
    assert verifier.verify(tokens[1]) is first[1]
    again = verifier.verify(tokens[0])
    assert again == first[0] and again is not first[0]


def test_forget_drops_cached_tokens(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue(AGENT, "read:orders").token
    first = verifier.verify(token)
    verifier.forget(token)
    second = verifier.verify(token)
    assert second is not first
    verifier.forget()
    assert verifier.verify(token) is not second


def test_a_cached_token_stops_verifying_when_its_key_is_retired(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    verifier = Verifier(JwksFile(key_dir.jwks_path, check_interval=0))
    old_kid = issuer.key.kid
    old = issuer.issue(AGENT, "read:orders").token
    cached = verifier.verify(old)

    key_dir.rotate()
    new = Issuer(key_dir.signing_key()).issue(AGENT, "read:orders").token
    assert verifier.verify(old) is cached  # rotation alone keeps old tokens valid
    assert verifier.verify(new).kid == key_dir.active().kid != old_kid

    key_dir.retire(old_kid)
    with pytest.raises(UnknownKeyError):
        verifier.verify(old)
    assert verifier.verify(new).subject == AGENT


class ExplodingKeys:
    """A key source that fails in a way nobody planned for, after ``after`` good answers."""

    def __init__(self, keys: Any, after: int = 0) -> None:
        self.keys = keys
        self.after = after

    def get(self, kid: str) -> PublicKey | None:
        if self.after <= 0:
            raise RuntimeError("key source exploded")
        self.after -= 1
        return self.keys.get(kid)  # type: ignore[no-any-return]


def test_an_unexpected_exception_is_a_rejection(key_dir: KeyDirectory, issuer: Issuer) -> None:
    token = issuer.issue(AGENT, "read:orders").token
    with pytest.raises(InvalidTokenError) as info:
        Verifier(ExplodingKeys(key_dir.public_keys())).verify(token)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "\n" not in str(info.value)


def test_an_unexpected_exception_on_a_cached_token_is_a_rejection(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    token = issuer.issue(AGENT, "read:orders").token
    verifier = Verifier(ExplodingKeys(key_dir.public_keys(), after=1))
    assert verifier.verify(token).subject == AGENT
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(token)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_key_source_returning_nonsense_is_a_rejection(issuer: Issuer) -> None:
    class Nonsense:
        def get(self, kid: str) -> Any:
            return "not a key"

    with pytest.raises(InvalidTokenError):
        Verifier(Nonsense()).verify(issuer.issue(AGENT, "read:orders").token)


def test_a_config_error_in_the_key_source_is_a_rejection(issuer: Issuer) -> None:
    class Broken:
        def get(self, kid: str) -> PublicKey | None:
            raise ConfigError("cannot read the public keys")

    with pytest.raises(InvalidTokenError) as info:
        Verifier(Broken()).verify(issuer.issue(AGENT, "read:orders").token)
    assert isinstance(info.value.__cause__, ConfigError)


# -- decode_unverified ------------------------------------------------------------------


def test_decode_unverified_says_it_is_unverified(forge: Forge) -> None:
    token = tampered_payload(forge)  # a bad signature does not stop decoding
    decoded = decode_unverified(token)
    assert isinstance(decoded, UnverifiedClaims)
    assert decoded.verified is False
    assert dict(decoded.header) == forge.header()
    assert decoded.claims["scope"] == "read:orders write:refunds admin:**"
    assert not isinstance(decoded, VerifiedClaims)


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "!!.!!.!!", "x" * (MAX_TOKEN_BYTES + 1), None],
    ids=["empty", "two-parts", "not-base64", "oversized", "none"],
)
def test_decode_unverified_refuses_what_it_cannot_decode(token: Any) -> None:
    with pytest.raises(MalformedTokenError):
        decode_unverified(token)


class SwappableKeys:
    """A key source whose key under one kid can be swapped, as a hand-edited JWKS might."""

    def __init__(self, key: PublicKey) -> None:
        self.key = key

    def get(self, kid: str) -> PublicKey | None:
        return self.key if kid == self.key.kid else None


def test_a_cached_token_stops_verifying_when_its_kid_names_another_key(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    keys = SwappableKeys(issuer.key.public)
    verifier = Verifier(keys)
    token = issuer.issue(AGENT, "read:orders").token
    assert verifier.verify(token) is verifier.verify(token)
    impostor = SigningKey.generate("EdDSA").public
    keys.key = PublicKey(issuer.key.kid, "EdDSA", impostor.key)
    with pytest.raises(BadSignatureError):
        verifier.verify(token)

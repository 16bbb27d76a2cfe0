"""Interoperability with PyJWT, in both directions, for both algorithms."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from agentsudo_tokens import (
    ExpiredTokenError,
    Issuer,
    JwksFile,
    KeyDirectory,
    MalformedTokenError,
    Verifier,
)

ALGS = ["EdDSA", "ES256"]


@pytest.fixture(params=ALGS)
def keydir(request: pytest.FixtureRequest, tmp_path: Path) -> KeyDirectory:
    return KeyDirectory.init(tmp_path / "keys", alg=request.param)


def _pyjwt_key(keydir: KeyDirectory, kid: str) -> jwt.PyJWK:
    jwks = jwt.PyJWKSet.from_dict(json.loads(keydir.jwks_path.read_text()))
    return jwks[kid]


def test_our_token_verifies_with_pyjwt(keydir: KeyDirectory) -> None:
    minted = Issuer(keydir.signing_key()).issue(
        "SupportBot", ["read:orders", "write:refunds"], audience=["billing", "agentsudo"]
    )
    header = jwt.get_unverified_header(minted.token)
    assert header == {"alg": keydir.active().alg, "typ": "at+jwt", "kid": keydir.active().kid}
    key = _pyjwt_key(keydir, header["kid"])
    assert key.algorithm_name == keydir.active().alg
    claims = jwt.decode(
        minted.token,
        key,
        algorithms=[keydir.active().alg],
        audience="billing",
        issuer="agentsudo",
        options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
    )
    assert claims == dict(minted.claims)
    assert claims["scope"] == "read:orders write:refunds"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(minted.token, key, algorithms=[key.algorithm_name], audience="shipping")


def test_pyjwt_refuses_our_token_when_tampered(keydir: KeyDirectory) -> None:
    minted = Issuer(keydir.signing_key()).issue("SupportBot", "read:orders")
    head, _, signature = minted.token.split(".")
    forged = jwt.utils.base64url_encode(
        json.dumps({**minted.claims, "scope": "**"}).encode()
    ).decode()
    key = _pyjwt_key(keydir, keydir.active().kid)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{head}.{forged}.{signature}",
            key,
            algorithms=[key.algorithm_name],
            audience="agentsudo",
        )


def _pyjwt_claims(now: int, **changes: Any) -> dict[str, Any]:
    claims = {
        "iss": "agentsudo",
        "sub": "PlannerBot",
        "aud": "agentsudo",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "scope": "read:orders write:*",
    }
    claims.update(changes)
    return claims


def test_a_pyjwt_token_verifies_with_our_verifier(keydir: KeyDirectory) -> None:
    signing = keydir.signing_key()
    now = int(time.time())
    token = jwt.encode(
        _pyjwt_claims(now),
        signing.key,
        algorithm=signing.alg,
        headers={"typ": "at+jwt", "kid": signing.kid},
    )
    claims = Verifier(JwksFile(keydir.jwks_path)).verify(token)
    assert (claims.subject, claims.alg, claims.kid) == ("PlannerBot", signing.alg, signing.kid)
    assert claims.expires_at == now + 600
    assert claims.scopes.allows("write:refunds")
    assert not claims.scopes.allows("delete:orders")


def test_pyjwt_tokens_get_the_same_strictness(keydir: KeyDirectory) -> None:
    signing = keydir.signing_key()
    verifier = Verifier(JwksFile(keydir.jwks_path))
    now = int(time.time())
    plain_jwt = jwt.encode(
        _pyjwt_claims(now), signing.key, algorithm=signing.alg, headers={"kid": signing.kid}
    )
    with pytest.raises(MalformedTokenError):  # typ "JWT", not "at+jwt"
        verifier.verify(plain_jwt)
    expired = jwt.encode(
        _pyjwt_claims(now - 3600),
        signing.key,
        algorithm=signing.alg,
        headers={"typ": "at+jwt", "kid": signing.kid},
    )
    with pytest.raises(ExpiredTokenError):
        verifier.verify(expired)

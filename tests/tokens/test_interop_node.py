"""Our tokens verify with Node's ``jose`` given only ``jwks.json``, for both algorithms.

Needs ``node`` and the pinned ``jose`` (``npm ci --prefix tests/node``); skipped otherwise.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import Issuer, KeyDirectory

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "verify.mjs"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "jose" / "package.json").is_file(),
        reason="jose is not installed; run: npm ci --prefix tests/node",
    ),
]


@pytest.fixture(params=["EdDSA", "ES256"])
def keydir(request: pytest.FixtureRequest, tmp_path: Path) -> KeyDirectory:
    return KeyDirectory.init(tmp_path / "keys", alg=request.param)


def _jose(jwks: Path, token: str, issuer: str, audience: str) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, str(SCRIPT), str(jwks), token, issuer, audience],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _verified(keydir: KeyDirectory, token: str, issuer: str, audience: str) -> dict[str, Any]:
    done = _jose(keydir.jwks_path, token, issuer, audience)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _refusal(keydir: KeyDirectory, token: str, issuer: str, audience: str) -> str:
    done = _jose(keydir.jwks_path, token, issuer, audience)
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ")
    return done.stderr


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_our_token_verifies_with_jose(keydir: KeyDirectory) -> None:
    minted = Issuer(keydir.signing_key(), issuer="orders-issuer").issue(
        "SupportBot", ["read:orders", "write:refunds"], audience=["billing", "agentsudo"]
    )
    result = _verified(keydir, minted.token, "orders-issuer", "billing")
    active = keydir.active()
    assert result["header"] == {"alg": active.alg, "typ": "at+jwt", "kid": active.kid}
    assert result["payload"] == dict(minted.claims)
    assert result["payload"]["sub"] == "SupportBot"
    assert result["payload"]["scope"] == "read:orders write:refunds"


def test_jose_refuses_a_tampered_token(keydir: KeyDirectory) -> None:
    minted = Issuer(keydir.signing_key()).issue("SupportBot", "read:orders")
    head, _, signature = minted.token.split(".")
    widened = _b64(json.dumps({**minted.claims, "scope": "**"}).encode())
    assert "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" in _refusal(
        keydir, f"{head}.{widened}.{signature}", "agentsudo", "agentsudo"
    )


def test_jose_checks_issuer_audience_and_expiry(keydir: KeyDirectory) -> None:
    issuer = Issuer(keydir.signing_key())
    token = issuer.issue("SupportBot", "read:orders").token
    assert "ERR_JWT_CLAIM_VALIDATION_FAILED" in _refusal(keydir, token, "agentsudo", "shipping")
    assert "ERR_JWT_CLAIM_VALIDATION_FAILED" in _refusal(keydir, token, "someone-else", "agentsudo")
    expired = issuer.issue("SupportBot", "read:orders", now=1_700_000_000).token
    assert "ERR_JWT_EXPIRED" in _refusal(keydir, expired, "agentsudo", "agentsudo")


def test_jose_refuses_a_key_missing_from_the_jwks(keydir: KeyDirectory, tmp_path: Path) -> None:
    other = KeyDirectory.init(tmp_path / "other", alg=keydir.active().alg)
    token = Issuer(other.signing_key()).issue("SupportBot", "read:orders").token
    assert "ERR_JWKS_NO_MATCHING_KEY" in _refusal(keydir, token, "agentsudo", "agentsudo")


def test_a_delegated_token_verifies_with_jose_chain_and_all(keydir: KeyDirectory) -> None:
    """A token made by exchange is a plain JWT to another stack: jose verifies it and sees the
    chain (``act``, RFC 8693) and the ancestors' jtis as the broker minted them."""
    from agentsudo_tokens.tokens.delegation import Delegation

    issuer = Issuer(keydir.signing_key(), issuer="orders-issuer")
    root = issuer.issue("Orchestrator", ["read:*"], audience="billing")
    child = issuer.issue(
        "Orchestrator",
        ["read:orders"],
        audience="billing",
        delegation=Delegation(("Summarizer", "Helper"), (root.claims["jti"], "b" * 22)),
    )
    result = _verified(keydir, child.token, "orders-issuer", "billing")
    assert result["payload"] == dict(child.claims)
    assert result["payload"]["act"] == {"sub": "Helper", "act": {"sub": "Summarizer"}}
    assert result["payload"]["ancestors"] == [root.claims["jti"], "b" * 22]

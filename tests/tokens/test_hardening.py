"""Checks added after review: key directory permissions, issuer bounds, nbf after exp."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentsudo_tokens import (
    ConfigError,
    Issuer,
    KeyDirectory,
    MalformedTokenError,
    Verifier,
)
from agentsudo_tokens.tokens.jws import encode


def test_a_key_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    keydir = KeyDirectory.init(tmp_path / "keys")
    keydir.path.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        keydir.signing_key()
    keydir.path.chmod(0o755)
    assert keydir.signing_key().kid == keydir.active().kid


def test_init_refuses_an_existing_world_writable_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        KeyDirectory.init(shared)
    assert list(shared.iterdir()) == []


def test_the_issuer_never_mints_what_verifiers_refuse(issuer: Issuer) -> None:
    with pytest.raises(ConfigError, match="audience"):
        issuer.issue("Bot", "read:x", audience=[f"svc{i}" for i in range(33)])
    with pytest.raises(ConfigError, match="now"):
        issuer.issue("Bot", "read:x", now=-5)
    assert len(issuer.issue("Bot", "read:x", audience=[f"s{i}" for i in range(32)]).claims["aud"])


def test_nbf_after_exp_is_malformed(key_dir: KeyDirectory, verifier: Verifier) -> None:
    key = key_dir.signing_key()
    now = int(time.time())
    claims = {
        "iss": "agentsudo",
        "sub": "Bot",
        "aud": "agentsudo",
        "iat": now,
        "nbf": now + 120,
        "exp": now + 60,
        "jti": "j" * 22,
        "scope": "read:x",
    }
    token = encode({"alg": key.alg, "typ": "at+jwt", "kid": key.kid}, claims, key)
    with pytest.raises(MalformedTokenError, match="nbf"):
        verifier.verify(token)

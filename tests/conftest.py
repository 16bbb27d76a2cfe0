"""Shared fixtures: a fresh key directory, an issuer and a verifier per test.

Keys are made in ``tmp_path``; tests never read the repository's ``keys/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentsudo_tokens import Issuer, JwksFile, KeyDirectory, Verifier
from agentsudo_tokens.audit.events import _sinks
from agentsudo_tokens.guard.agent import _policy


@pytest.fixture(autouse=True)
def _fresh_process_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's ambient agent, verifier, audit file or AGENTSUDO_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("AGENTSUDO_"):
            monkeypatch.delenv(name)
    _policy.reset()
    _sinks.reset()
    yield
    _policy.reset()
    _sinks.reset()


@pytest.fixture
def key_dir(tmp_path: Path) -> KeyDirectory:
    """A key directory with one EdDSA key."""
    return KeyDirectory.init(tmp_path / "keys")


@pytest.fixture
def issuer(key_dir: KeyDirectory) -> Issuer:
    """An issuer signing with the key directory's active key."""
    return Issuer(key_dir.signing_key())


@pytest.fixture
def verifier(key_dir: KeyDirectory) -> Verifier:
    """A verifier trusting the key directory's ``jwks.json``."""
    return Verifier(JwksFile(key_dir.jwks_path))


pytest_plugins = ["conftest_store", "installed_cli"]  # stores (SQLite, real Redis); the CLI

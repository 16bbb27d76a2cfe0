"""Fixtures of the CLI tests: a working directory whose ./keys is the default key directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import issue

from agentsudo_tokens import KeyDirectory


@pytest.fixture
def here(tmp_path: Path, key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch) -> KeyDirectory:
    """Work in tmp_path, whose ./keys is the default key directory."""
    monkeypatch.chdir(tmp_path)
    return key_dir


@pytest.fixture
def token(here: KeyDirectory) -> str:
    return issue()

"""The installed ``agentsudo`` run as a user runs it, and a project directory to run it in.

    def test_x(workdir: Path) -> None:          # a fixture: ``agentsudo keys init`` done there
        done = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir)

Loaded from ``conftest.py`` through ``pytest_plugins``; ``sh`` and ``AGENTSUDO`` are imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

AGENTSUDO = str(Path(sys.executable).with_name("agentsudo"))


def sh(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agentsudo`` in ``cwd``, as a user would; capture its output."""
    return subprocess.run(
        [AGENTSUDO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A project directory with ``keys/`` made by ``agentsudo keys init``: the default store."""
    done = sh("keys", "init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path

"""The README's "Tokens bound to a key (DPoP)" walkthrough runs as written.

Its shell block runs under bash in a fresh directory beside the checkout's
``examples`` (the port changed to a free one), with ``.venv``'s commands first
on the PATH; its Python block runs against the key directory the shell made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_services_e2e import free_port

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Tokens bound to a key (DPoP)"


def _block(language: str) -> str:
    section = (ROOT / "README.md").read_text().split(f"\n{HEADING}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.+?)\n```", section, re.DOTALL)
    assert found is not None, language
    return found.group(1)


def test_the_dpop_walkthrough_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = _block("sh").replace("8000", str(free_port()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all outcomes as expected" in done.stdout
    assert done.stdout.splitlines()[-2:] == ["401", "401"]

    python = subprocess.run(
        [sys.executable, "-c", _block("python")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert python.returncode == 0, python.stderr

"""The README's "Limits and budgets" walkthrough runs as printed, and prints what it says.

Its shell block runs under bash in a fresh directory whose ``.venv`` is the
checkout's (so ``source .venv/bin/activate`` works as written), with no
``AGENTSUDO_*`` variable: the default configuration (the key directory's SQLite
state, no explicit verifier). Each comment that says what a line prints is
compared with what it printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Limits and budgets"


def _block() -> str:
    section = (ROOT / "README.md").read_text().split(f"\n{HEADING}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.+?)\n```", section, re.DOTALL)
    assert found is not None, "no sh block under " + HEADING
    return found.group(1)


def _comment(script: str, code: str) -> str:
    """The comment on the one line of ``script`` holding ``code``."""
    (line,) = [line for line in script.splitlines() if code in line]
    return line.split("#", 1)[1].strip()


def test_the_limits_walkthrough_prints_what_its_comments_say(tmp_path: Path) -> None:
    script = _block()
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    printed = [line.strip() for line in done.stdout.splitlines()]

    assert _comment(script, "print(process_refund(").startswith("allowed")
    assert "refunded 50 USD on o1" in printed  # the allowed call ran and returned
    denied = _comment(script, "print(denied)")
    assert denied == "amount 5000 exceeds the token's limit 100 for write:refunds"
    assert denied in printed
    shown = _comment(script, 'agentsudo budget show "$AGENTSUDO_TOKEN"')
    assert shown == "write:refunds (entry 0): amount 450 of 500 left, 19 of 20 calls left"
    assert shown in printed
    # "allowed: 450 and 19 calls left": what the budget line shows after the one call
    assert "450" in _comment(script, "print(process_refund(") and "19 of 20 calls" in shown
    header = printed[printed.index(shown) - 1]
    assert header.endswith("(store sqlite:///keys/agentsudo-state.db):"), header
    assert (tmp_path / "keys" / "agentsudo-state.db").is_file()

"""Every example runs, and says what it promises, so none can rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_ecommerce_support_bot() -> None:
    lines = _run("ecommerce_support_bot.py").splitlines()
    assert lines[0] == "Refunded $50.00 on order_123"
    assert lines[1].startswith("Email sent to cust_456")
    assert lines[2].startswith("Blocked:") and "delete:customer" in lines[2]
    assert "write:refunds" not in lines[2]  # the denial does not list what the bot holds


def test_audit_rollout() -> None:
    out = _run("audit_rollout.py")
    assert "updated record 7" in out  # audit mode let it through
    assert '"scope": "write:database"' in out  # and recorded it
    assert "chain intact: True" in out
    assert "blocked: agent 'ReportingBot' lacks scope 'write:database'" in out


def test_approval_refunds() -> None:
    out = _run("approval_refunds.py")
    assert "refunded $40 on order_1" in out
    assert "refused: agent 'SupportBot' lacks scope 'write:refunds'" in out
    assert "$5000 -> False" in out


def test_mcp_server_demo() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "mcp_server.py"), "--demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "allowed  issue_refund" in done.stdout
    assert "requires scope 'delete:customer'" in done.stdout
    assert "read:orders write:refunds" not in done.stdout.split("DENIED", 1)[1]
    assert "401" in done.stdout

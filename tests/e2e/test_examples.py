"""Every example runs, and says what it promises, so none can rot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


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


def _readme_block(heading: str, language: str = "python") -> str:
    """The first code block in ``language`` of the README section under ``heading``."""
    section = (ROOT / "README.md").read_text().split(f"\n{heading}\n", 1)[1]
    found = re.search(rf"```{language}\n(.+?)\n```", section, re.DOTALL)
    assert found is not None, heading
    return found.group(1)


def test_the_readme_python_quick_start_runs_as_written(tmp_path: Path) -> None:
    """Pasted into a fresh directory, then run again there: it mints, verifies, allows, denies."""
    script = tmp_path / "quick_start.py"
    script.write_text(_readme_block("## Quick start: Python"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    for _ in range(2):  # the first run makes ./keys, the second finds it
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == ""
        assert done.stdout.splitlines() == [
            "refunded 50 on order_123",
            "agent 'AnalyticsBot' lacks scope 'write:refunds' for process_refund",
            "refunded 10 on order_789",
        ]
    assert (tmp_path / "keys" / "jwks.json").exists()


@pytest.mark.parametrize("package", ["fastapi", "uvicorn", "httpx"])
def test_the_services_demo_names_the_install_command_for_a_missing_package(
    package: str, tmp_path: Path
) -> None:
    """On an install without the ``services`` extra: one line naming it, no traceback."""
    code = (
        f"import runpy, sys; sys.modules[{package!r}] = None; "  # as if it were not installed
        f"sys.argv = ['run_demo.py']; "
        f"runpy.run_path({str(EXAMPLES / 'services' / 'run_demo.py')!r}, run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert (
        done.stderr
        == f"run_demo.py needs {package}: pip install '.[services]' (from the repository root)\n"
    )


def test_the_readme_shell_quick_start_runs_as_written(tmp_path: Path) -> None:
    """Line by line in bash, from a directory holding the examples, as in a fresh clone."""
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / "support_agent.py", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    activate = tmp_path / ".venv" / "bin" / "activate"  # as the README's install made it
    activate.parent.mkdir(parents=True)
    activate.write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    done = subprocess.run(
        ["bash", "-c", _readme_block("## Quick start: the shell", "sh")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "created keys/ with an EdDSA key; public keys in keys/jwks.json",
        "agentsudo: denied: agent 'SupportBot' lacks scope 'delete:customer'",
    ]
    lines = done.stdout.splitlines()[1:]  # after the kid that keys init prints
    assert lines[:4] == [
        "  [SupportBot] running with scopes from AGENTSUDO_TOKEN",
        "    allowed  lookup_order: order order_123: 2 items, $50.00",
        "    allowed  issue_refund: refunded $50 on order_123",
        "    DENIED   delete_customer: agent 'SupportBot' lacks scope 'delete:customer' "
        "for delete_customer",
    ]
    assert lines[4].startswith("valid: agent 'SupportBot'")  # verify --scope write:refunds
    assert lines[5:8] == [  # agentsudo run: the child acts as AnalyticsBot
        "  [AnalyticsBot] running with scopes from AGENTSUDO_TOKEN",
        "    allowed  lookup_order: order order_123: 2 items, $50.00",
        "    DENIED   issue_refund: agent 'AnalyticsBot' lacks scope 'write:refunds' "
        "for issue_refund",
    ]
    assert done.returncode == 0  # the last line's: agentsudo run passes the child's on


@pytest.mark.parametrize(
    ("example", "package", "extra"),
    [("mcp_server.py", "mcp", "mcp"), ("langchain_tool.py", "langchain_core", "langchain")],
)
def test_an_example_names_its_extra_when_a_package_is_missing(
    example: str, package: str, extra: str, tmp_path: Path
) -> None:
    code = (
        f"import runpy, sys; sys.modules[{package!r}] = None; "  # as if it were not installed
        f"sys.argv = [{example!r}]; "
        f"runpy.run_path({str(EXAMPLES / example)!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr == (
        f"{example} needs the {package} package: pip install '.[{extra}]' in a checkout\n"
    )

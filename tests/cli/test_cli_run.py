"""``agentsudo run`` (real subprocesses) and the environment-variable path end to end."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import (
    agentsudo,
    invoke,
    one_line,
    python,
    unb64,
)

from agentsudo_tokens import KeyDirectory

# --- run (real subprocesses) -----------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    from agentsudo_tokens import PermissionDeniedError, current_agent, sudo

    @sudo(scope="read:orders")
    def read_orders():
        return "3 orders"

    @sudo(scope="write:orders")
    def write_orders():
        return "written"

    token = os.environ["AGENTSUDO_TOKEN"]
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    os.chdir(sys.argv[1])  # the public keys must still be found
    report = {
        "argv": sys.argv[1:],
        "token_in_argv": any(token in arg for arg in sys.argv),
        "token_in_cmdline": token.encode() in Path("/proc/self/cmdline").read_bytes(),
        "token_in_parent_cmdline": token.encode() in parent,
        "parent_is_agentsudo": b"agentsudo" in parent,
        "jwks": os.environ["AGENTSUDO_JWKS"],
        "read": read_orders(),
    }
    try:
        report["write"] = write_orders()
    except PermissionDeniedError as exc:
        report["write"] = f"denied: {exc}"
    agent = current_agent()
    report["agent"] = [agent.name, agent.signed]
    print(json.dumps(report))
    """
)


def run_args(*command: str, scopes: str = "read:*") -> list[str]:
    return ["run", "--agent", "AnalyticsBot", "--scopes", scopes, "--", *command]


def test_run_gives_the_child_a_token_in_its_environment_only(
    tmp_path: Path, key_dir: KeyDirectory
) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "elsewhere").mkdir()
    child_args = ["elsewhere", "--scopes", "write:*", "--json", "-c"]
    proc = agentsudo(run_args(sys.executable, "child.py", *child_args), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(one_line(proc.stdout))  # agentsudo itself adds nothing to stdout
    assert report["argv"] == child_args  # passed through verbatim, options included
    assert report["token_in_argv"] is False
    assert report["token_in_cmdline"] is False
    assert report["token_in_parent_cmdline"] is False
    assert report["parent_is_agentsudo"] is True
    assert Path(report["jwks"]).is_absolute()
    assert Path(report["jwks"]).samefile(key_dir.jwks_path)
    assert report["read"] == "3 orders"
    assert report["write"].startswith("denied: ") and "write:orders" in report["write"]
    assert report["agent"] == ["AnalyticsBot", True]


@pytest.mark.parametrize("status", [0, 1, 7, 255])
def test_run_passes_the_exit_status_through(
    tmp_path: Path, key_dir: KeyDirectory, status: int
) -> None:
    proc = agentsudo(run_args(sys.executable, "-c", f"raise SystemExit({status})"), cwd=tmp_path)
    assert proc.returncode == status
    assert proc.stdout == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_run_signal_death_is_128_plus_n(
    tmp_path: Path, key_dir: KeyDirectory, sig: signal.Signals
) -> None:
    code = f"import os; os.kill(os.getpid(), {int(sig)})"
    proc = agentsudo(run_args(sys.executable, "-c", code), cwd=tmp_path)
    assert proc.returncode == 128 + int(sig)


def test_run_command_not_found_is_127(tmp_path: Path, key_dir: KeyDirectory) -> None:
    proc = agentsudo(run_args("no-such-command-agentsudo-test"), cwd=tmp_path)
    assert proc.returncode == 127
    assert proc.stdout == ""
    assert "command not found" in one_line(proc.stderr)


def test_run_uses_agentsudo_keys_dir(tmp_path: Path) -> None:
    keys = KeyDirectory.init(tmp_path / "issuer" / "keys")
    code = (
        "import os; from agentsudo_tokens import current_agent; os.chdir('/'); "
        "print(current_agent().name); print(os.environ['AGENTSUDO_JWKS'])"
    )
    env = {"AGENTSUDO_KEYS_DIR": "issuer/keys"}  # relative: the child gets an absolute JWKS
    proc = agentsudo(run_args(sys.executable, "-c", code), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    name, jwks = proc.stdout.splitlines()
    assert name == "AnalyticsBot"
    assert Path(jwks).is_absolute() and Path(jwks).samefile(keys.jwks_path)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_run_child_still_receives_ctrl_c(tmp_path: Path, key_dir: KeyDirectory) -> None:
    code = (
        "import os, signal, sys, time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.5)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    proc = agentsudo(run_args(sys.executable, "-c", code), cwd=tmp_path, preexec_fn=_sigint_default)
    assert proc.returncode == 130


def test_run_makes_a_relative_jwks_variable_absolute(tmp_path: Path, key_dir: KeyDirectory) -> None:
    code = "import os; print(os.environ['AGENTSUDO_JWKS'])"
    env = {"AGENTSUDO_JWKS": "keys/jwks.json"}
    proc = agentsudo(run_args(sys.executable, "-c", code), cwd=tmp_path, env=env)
    assert proc.returncode == 0
    assert Path(proc.stdout.strip()).is_absolute()


@pytest.mark.parametrize(
    "args",
    [[], ["--"], ["--", "--"]],
    ids=["nothing", "dashdash", "dashdash-twice"],
)
def test_run_without_a_command_is_a_usage_error(here: KeyDirectory, args: list[str]) -> None:
    result = invoke("run", "--agent", "Bot", "--scopes", "x", *args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_run_does_not_start_the_command_when_minting_fails(
    here: KeyDirectory, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    result = invoke("run", "--agent", "Bot", "--scopes", "read:", "--", sys.executable, "-c", code)
    assert result.exit_code == 2
    assert not marker.exists()
    one_line(result.stderr)


def test_run_requires_agent_and_scopes(here: KeyDirectory) -> None:
    assert invoke("run", "--", "true").exit_code == 2
    assert invoke("run", "--agent", "Bot", "--", "true").exit_code == 2


# --- the environment-variable path, end to end ------------------------------

MY_AGENT = textwrap.dedent(
    """
    from agentsudo_tokens import PermissionDeniedError, sudo

    @sudo(scope="write:refunds")
    def process_refund(order_id, amount):
        return f"refunded {amount} on {order_id}"

    @sudo(scope="delete:customer")
    def delete_customer(customer_id):
        return f"deleted {customer_id}"

    print(process_refund("order_123", 50))
    try:
        delete_customer("cust_9")
    except PermissionDeniedError as exc:
        print(f"denied: {exc}")
    else:
        print("NOT DENIED")
    """
)


def test_env_var_path_end_to_end(tmp_path: Path) -> None:
    init = agentsudo(["keys", "init"], cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    kid = one_line(init.stdout)

    minted = agentsudo(
        ["issue", "--agent", "SupportBot", "--scopes", "read:orders,write:refunds"], cwd=tmp_path
    )
    assert minted.returncode == 0, minted.stderr
    assert minted.stderr == ""
    token = one_line(minted.stdout)  # what $(agentsudo issue ...) captures
    assert unb64(token.split(".")[0])["kid"] == kid

    (tmp_path / "my_agent.py").write_text(MY_AGENT)
    agent = python(["my_agent.py"], cwd=tmp_path, env={"AGENTSUDO_TOKEN": token})
    assert agent.returncode == 0, agent.stderr
    allowed, denied = agent.stdout.splitlines()
    assert allowed == "refunded 50 on order_123"
    assert denied.startswith("denied: ") and "delete:customer" in denied

    # without the variable, the same unchanged script is refused
    bare = python(["my_agent.py"], cwd=tmp_path, env={})
    assert bare.returncode != 0
    assert "PermissionDeniedError" in bare.stderr

    env = {"AGENTSUDO_TOKEN": token}
    ok = agentsudo(["verify", "--scope", "write:refunds"], cwd=tmp_path, env=env)
    assert ok.returncode == 0
    assert one_line(ok.stdout).startswith("valid: agent 'SupportBot'")
    no = agentsudo(["verify", "--scope", "delete:customer"], cwd=tmp_path, env=env)
    assert no.returncode == 1
    assert no.stdout == ""
    assert "delete:customer" in one_line(no.stderr)
    assert token not in no.stderr

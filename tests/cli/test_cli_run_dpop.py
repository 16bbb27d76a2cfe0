"""``agentsudo run --dpop`` and ``issue --dpop-jkt``: tokens bound to a key, the key never written.

Real subprocesses: the installed ``agentsudo`` runs a Python child that reports
what it received; the key reaches it through an inherited pipe only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import agentsudo, invoke, one_line

from agentsudo_tokens import JwksFile, KeyDirectory, Verifier
from agentsudo_tokens.config import DPOP_KEY_FD, child_environment
from agentsudo_tokens.tokens.dpop import DPoPKey

CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from pathlib import Path

    from agentsudo_tokens import current_agent
    from agentsudo_tokens.guard.possession import process_key

    fd, _, inode = os.environ["AGENTSUDO_DPOP_KEY_FD"].partition(":")
    environ = Path("/proc/self/environ").read_bytes()
    cmdline = Path("/proc/self/cmdline").read_bytes()
    key = process_key()
    again = process_key()  # read once, kept in memory
    grandchild = subprocess.run(
        [sys.executable, "-c",
         "from agentsudo_tokens.guard.possession import process_key; print(process_key())"],
        capture_output=True, text=True,
    )
    agent = current_agent()
    print(json.dumps({
        "agent": agent.name,
        "bound": agent.claims.jkt,
        "key": key.jkt,
        "alg": key.alg,
        "same": again is key,
        "private_in_environ": key.to_private_jwk()["d"].encode() in environ,
        "private_in_cmdline": key.to_private_jwk()["d"].encode() in cmdline,
        "pipe_closed": not os.path.exists(f"/proc/self/fd/{fd}"),
        "grandchild": grandchild.stdout.strip() or grandchild.stderr.strip(),
    }))
    """
)


def run(cwd: Path, *options: str, child: str = CHILD) -> dict[str, object]:
    argv = ["run", *options, "--agent", "SupportBot", "--scopes", "read:orders", "--"]
    done = agentsudo([*argv, sys.executable, "-c", child], cwd=cwd)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(one_line(done.stdout))
    return report


@pytest.mark.parametrize(
    ("options", "alg"),
    [
        (["--dpop"], "ES256"),
        (["--dpop-alg", "EdDSA"], "EdDSA"),
        (["--dpop", "--dpop-alg", "ES256"], "ES256"),
    ],
)
def test_the_child_gets_a_bound_token_and_its_key_through_a_pipe(
    tmp_path: Path, key_dir: KeyDirectory, options: list[str], alg: str
) -> None:
    report = run(tmp_path, *options)
    assert report["agent"] == "SupportBot"
    assert report["bound"] == report["key"] and report["alg"] == alg
    assert report["same"] is True
    assert report["private_in_environ"] is False and report["private_in_cmdline"] is False
    assert report["pipe_closed"] is True
    assert report["grandchild"] == "None"  # the variable is inherited, the key is not


def test_nothing_is_written_to_disk(tmp_path: Path, key_dir: KeyDirectory) -> None:
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    run(tmp_path, "--dpop")
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before


def test_without_dpop_nothing_changes(tmp_path: Path, key_dir: KeyDirectory) -> None:
    code = (
        "import os; from agentsudo_tokens import current_agent; "
        "print(current_agent().claims.jkt, os.environ.get('AGENTSUDO_DPOP_KEY_FD'))"
    )
    argv = ["run", "--agent", "SupportBot", "--scopes", "read:orders", "--"]
    done = agentsudo([*argv, sys.executable, "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]


def test_a_child_that_is_not_handed_the_pipe_holds_no_key() -> None:
    code = (
        "import os, sys\n"
        "from agentsudo_tokens.guard.possession import process_key\n"
        "r, w = os.pipe()\n"  # a pipe of its own, maybe at the number the variable names
        "os.environ['AGENTSUDO_DPOP_KEY_FD'] = f'{r}:1'\n"
        "print(process_key(), os.fstat(r).st_size >= 0)\n"  # not read, not closed
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["None", "True"]


def test_child_environment_never_passes_the_key_pipe_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DPOP_KEY_FD, "5:1234")
    assert DPOP_KEY_FD not in child_environment("t.o.k")


def test_issue_binds_to_a_thumbprint(key_dir: KeyDirectory) -> None:
    key = DPoPKey.generate()
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    result = invoke("issue", "--agent", "SupportBot", "--scopes", "read:orders",
                    "--dpop-jkt", key.jkt, env=env)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    claims = Verifier(JwksFile(key_dir.jwks_path)).verify(result.stdout.strip())
    assert claims.jkt == key.jkt
    bad = invoke("issue", "--agent", "SupportBot", "--scopes", "read:orders",
                 "--dpop-jkt", "not-a-thumbprint", env=env)  # fmt: skip
    assert bad.exit_code == 2 and "jkt: expected" in one_line(bad.stderr)  # bad usage


def test_the_env_variable_must_name_a_pipe_and_its_inode() -> None:
    code = (
        "from agentsudo_tokens.guard.possession import process_key\n"
        "try:\n    process_key()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, DPOP_KEY_FD: "7"}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert child.stdout.startswith("ConfigError AGENTSUDO_DPOP_KEY_FD: expected FD:INODE")


LEAK = (  # a process started by the agent: does it hold the key pipe, and can it read the key?
    "import os, sys; fd = int(sys.argv[1]); "
    "print(sys.argv[2], 'LEAKED' if os.path.exists(f'/proc/self/fd/{fd}') and os.read(fd, 9999) "
    "else 'no pipe', flush=True)"
)
SPAWNER = textwrap.dedent(
    f"""
    import json, os, shlex, subprocess, sys

    fd = os.environ["AGENTSUDO_DPOP_KEY_FD"].partition(":")[0]
    inheritable_before = os.get_inheritable(int(fd))
    import agentsudo_tokens  # marks the pipe close-on-exec, before anything reads it
    from agentsudo_tokens.guard.possession import process_key

    leak = shlex.quote({LEAK!r})
    os.system(f"{{shlex.quote(sys.executable)}} -c {{leak}} {{fd}} os.system")
    subprocess.run([sys.executable, "-c", {LEAK!r}, fd, "close_fds=False"], close_fds=False)
    try:
        key = process_key().jkt
    except agentsudo_tokens.ConfigError as exc:  # read by another process first
        key = str(exc)
    print(json.dumps({{
        "inheritable_before": inheritable_before,
        "key": key,
        "bound": agentsudo_tokens.current_agent().claims.jkt,
    }}))
    """
)


def test_a_program_the_agent_starts_gets_no_key_pipe(tmp_path: Path, key_dir: KeyDirectory) -> None:
    """Until the agent reads its key, a shell it starts (``os.system``) would hand the pipe on:
    importing agentsudo_tokens marks it close-on-exec, so nothing exec'd after gets it."""
    argv = ["run", "--dpop", "--agent", "SupportBot", "--scopes", "read:orders", "--"]
    done = agentsudo([*argv, sys.executable, "-c", SPAWNER], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    *started, last = done.stdout.splitlines()
    assert started == ["os.system no pipe", "close_fds=False no pipe"]
    report = json.loads(last)
    assert report["inheritable_before"] is True  # as handed over
    assert report["key"] == report["bound"]  # and the agent itself still reads its key


def test_a_shell_between_run_and_the_agent_passes_the_pipe_on(
    tmp_path: Path, key_dir: KeyDirectory
) -> None:
    """What the README says: a non-Python child (a shell) hands the pipe to what it starts."""
    code = (
        "from agentsudo_tokens import current_agent; "
        "from agentsudo_tokens.guard.possession import process_key; "
        "print(process_key().jkt == current_agent().claims.jkt)"
    )
    argv = ["run", "--dpop", "--agent", "SupportBot", "--scopes", "read:orders", "--"]
    shell = f"{sys.executable} -c '{code}'"
    done = agentsudo([*argv, "sh", "-c", shell], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"

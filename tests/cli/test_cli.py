"""The ``agentsudo`` command line (DESIGN.md section 5).

Most tests drive the root group in-process with click's ``CliRunner`` and check
stdout, stderr and the exit status separately; ``run``, the env-var path end to
end, ``--debug`` and the import-cost check use real subprocesses of the
installed ``agentsudo`` script.

Every invocation also checks what must never happen: a traceback, an unexpected
exception, or private key material on any stream.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from pathlib import Path

import click
import pytest
from cli_helpers import (
    AGENTSUDO,
    agentsudo,
    clean_env,
    invoke,
    one_line,
    python,
)

from agentsudo_cli.main import cli
from agentsudo_tokens import Issuer, KeyDirectory

# --- the root command ------------------------------------------------------


def test_importing_the_cli_stays_light(tmp_path: Path) -> None:
    heavy = ("cryptography", "jwt", "pydantic", "agentsudo_tokens")
    code = f"import agentsudo_cli.main, sys; print([m for m in {heavy!r} if m in sys.modules])"
    proc = python(["-c", code], cwd=tmp_path, env={})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"


def test_the_command_list_loads_no_command(tmp_path: Path) -> None:
    """``agentsudo --help`` lists every command from main's table, importing none of them."""
    code = (
        "import sys; from agentsudo_cli.main import main; sys.argv = ['agentsudo', '--help']\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('agentsudo_cli.'))\n"
        "print(loaded, 'logging' in sys.modules, file=sys.stderr)"
    )
    proc = python(["-c", code], cwd=tmp_path, env={})
    assert proc.stderr == "['agentsudo_cli.main'] False\n"
    listed = proc.stdout.split("Commands:\n", 1)[1].split()
    for name in cli.list_commands(click.Context(cli)):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None and command.name == name
        assert name in listed


@pytest.mark.parametrize(("flags", "level"), [([], "WARNING"), (["--debug"], "DEBUG")])
def test_a_command_run_by_main_sets_up_logging_once(
    tmp_path: Path, key_dir: KeyDirectory, flags: list[str], level: str
) -> None:
    code = (
        "import logging, sys; from agentsudo_cli.main import main\n"
        f"sys.argv = ['agentsudo', *{flags!r}, 'keys', 'list']\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "logger = logging.getLogger('agentsudo')\n"
        "logger.warning('seen %s', 'here')\n"
        "streams = [h for h in logger.handlers if type(h) is logging.StreamHandler]\n"
        "print(len(streams), logging.getLevelName(logger.level), file=sys.stderr)"
    )
    proc = python(["-c", code], cwd=tmp_path, env={})
    assert proc.stderr == f"agentsudo: WARNING seen here\n1 {level}\n"


def test_help_and_version(tmp_path: Path) -> None:
    version = importlib.metadata.version("agentsudo-tokens")
    proc = agentsudo(["--version"], cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == f"agentsudo, version {version}\n"
    helped = agentsudo(["--help"], cwd=tmp_path)
    assert helped.returncode == 0
    for command in ("keys", "issue", "verify", "inspect", "run"):
        assert command in helped.stdout
    assert invoke("-h").exit_code == 0


@pytest.mark.parametrize(
    "command",
    [["keys"], ["keys", "init"], ["keys", "retire"], ["issue"], ["verify"], ["inspect"], ["run"]],
    ids=lambda c: "-".join(c),
)
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: agentsudo ")


def test_unknown_command_is_a_usage_error() -> None:
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "list"],
        ["keys", "rotate"],
        ["keys", "jwks"],
        ["issue", "--agent", "B", "--scopes", "x"],
    ],
    ids=["list", "rotate", "jwks", "issue"],
)
def test_corrupt_key_directory_fails_closed(here: KeyDirectory, args: list[str]) -> None:
    (here.path / "keys.json").write_text("{not json")
    if args[-1] == "jwks":
        here.jwks_path.write_text("{not json")
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert one_line(result.stderr).startswith("agentsudo: ")


def test_debug_shows_the_traceback(tmp_path: Path, key_dir: KeyDirectory) -> None:
    (key_dir.path / "keys.json").write_text("{not json")
    plain = agentsudo(["keys", "list"], cwd=tmp_path)
    assert plain.returncode == 2
    assert "cannot read" in one_line(plain.stderr)
    debug = agentsudo(["--debug", "keys", "list"], cwd=tmp_path, debug=True)
    assert debug.returncode != 0
    assert debug.stdout == ""
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_unexpected_errors_fail_closed(here: KeyDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentsudo_tokens.tokens import keydir

    def boom(self: KeyDirectory) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(keydir.KeyDirectory, "describe", boom)
    result = invoke("keys", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert one_line(result.stderr) == "agentsudo: internal error: RuntimeError: boom"
    as_json = invoke("keys", "list", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {
        "ok": False,
        "error": "InternalError",
        "message": "internal error: RuntimeError: boom",
    }


# --- a reader that goes away (real pipes) --------------------------------------------


def _audit_file(path: Path, events: int) -> Path:
    line = json.dumps(
        {"time": "2026-01-01T00:00:00Z", "outcome": "denied", "agent": "SupportBot"}
        | {"scope": "write:refunds", "function": "process_refund", "reason": "not granted"}
    )
    path.write_text((line + "\n") * events)
    return path


def test_audit_show_into_head_ends_quietly(tmp_path: Path) -> None:
    """``agentsudo audit show --json | head -1``: one line out, nothing on stderr."""
    log = _audit_file(tmp_path / "audit.jsonl", 20_000)  # ~2 MB: far more than a pipe holds
    env = clean_env({"AGENTSUDO_AUDIT_LOG": str(log)})
    for args in (["audit", "show", "--json"], ["audit", "show"]):
        producer = subprocess.Popen(
            [str(AGENTSUDO), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert producer.stdout is not None and producer.stderr is not None
        head = subprocess.run(
            ["head", "-1"], stdin=producer.stdout, capture_output=True, text=True, timeout=30
        )
        producer.stdout.close()  # head is the only reader left, and it is gone
        stderr = producer.stderr.read().decode()
        producer.stderr.close()
        assert producer.wait(timeout=30) == 1
        assert stderr == ""
        assert head.stdout.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["keys", "jwks"],
        ["keys", "list", "--json"],
        ["issue", "--agent", "SupportBot", "--scopes", "read:orders"],
        ["verify", "--json", "not-a-token"],
        ["inspect", "TOKEN"],
        ["verify", "TOKEN", "--json"],
        ["audit", "show", "audit.jsonl", "--json"],
        ["--debug", "audit", "show", "audit.jsonl"],
        ["scopes", "no_such_module_here", "--json"],
    ],
    ids=lambda args: " ".join(args),
)
def test_a_closed_stdout_ends_quietly(
    tmp_path: Path, key_dir: KeyDirectory, args: list[str]
) -> None:
    """Every command, its output or its JSON error meeting a pipe nobody reads: exit 1, silence."""
    _audit_file(tmp_path / "audit.jsonl", 10)
    token = Issuer(key_dir.signing_key()).issue("SupportBot", ["read:orders"]).token
    args = [token if arg == "TOKEN" else arg for arg in args]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(AGENTSUDO), *args],
            cwd=tmp_path,
            env=clean_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    said = done.stderr.removeprefix("agentsudo: NOT VERIFIED: decoded only; ")  # inspect says so
    assert (done.returncode, said.removeprefix("use 'agentsudo verify' to check it\n")) == (1, "")


# --- shell completion (README: "Shell completion") ------------------------------------


def test_shell_completion_prints_a_script_and_completes(tmp_path: Path) -> None:
    script = agentsudo([], cwd=tmp_path, env={"_AGENTSUDO_COMPLETE": "bash_source"})
    assert script.returncode == 0 and script.stderr == ""
    assert "complete -o nosort -F _agentsudo_completion agentsudo" in script.stdout
    words = {
        "_AGENTSUDO_COMPLETE": "bash_complete",
        "COMP_WORDS": "agentsudo ke",
        "COMP_CWORD": "1",
    }
    completed = agentsudo([], cwd=tmp_path, env=words)
    assert (completed.returncode, completed.stdout) == (0, "plain,keys\n")


def test_a_closed_stdout_is_an_error_not_a_lost_token(tmp_path: Path) -> None:
    """`agentsudo issue ... >&-`: the token would go nowhere; say so and mint nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_KEYS_DIR"] = str(tmp_path / "keys")
    assert (
        subprocess.run([str(AGENTSUDO), "keys", "init"], env=env, capture_output=True).returncode
        == 0
    )
    done = subprocess.run(
        ["sh", "-c", f"'{AGENTSUDO}' issue --agent S --scopes read:x --once >&-"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "agentsudo: standard output is closed; nothing was done\n"
    assert not (tmp_path / "keys" / "agentsudo-state.db").exists()  # no one-time mark either


def test_a_malformed_jwks_url_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_JWKS"] = "https://[::1"
    done = subprocess.run(
        [str(AGENTSUDO), "verify", "a.b.c"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("agentsudo: AGENTSUDO_JWKS: JWKS URL: bad host or port")


@pytest.mark.parametrize("args", [["verify", "garbage", "--json"], ["keys", "list", "--json"]])
def test_json_onto_a_full_stdout_is_one_line_not_a_traceback(
    tmp_path: Path, args: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [str(AGENTSUDO), *args], stdout=full, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path, env=env, timeout=60,
        )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

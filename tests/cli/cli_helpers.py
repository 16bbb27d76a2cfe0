"""Helpers for the CLI tests: invoke the root group in-process (checking that no traceback,
unexpected exception or private key material reaches any stream), or the installed script."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from agentsudo_cli.main import cli

AGENTSUDO = Path(sys.executable).parent / "agentsudo"
PRIVATE = "PRIVATE KEY"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def invoke(*args: str, input: str | None = None, env: Mapping[str, str] | None = None) -> Result:
    """Run ``agentsudo ARGS`` in-process; check the never-ever rules on the way out."""
    result = CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="agentsudo")
    unexpected = result.exception
    if unexpected is not None and not isinstance(unexpected, SystemExit):
        raise AssertionError(f"agentsudo {args} raised {unexpected!r}") from unexpected
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream
        assert PRIVATE not in stream
    return result


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus every AGENTSUDO_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env.update(extra or {})
    return env


def agentsudo(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    debug: bool = False,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agentsudo`` script for real."""
    proc = subprocess.run(
        [str(AGENTSUDO), *args],
        cwd=cwd,
        env=clean_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=preexec_fn,
    )
    for stream in (proc.stdout, proc.stderr):
        assert PRIVATE not in stream
        if not debug:
            assert "Traceback" not in stream
    return proc


def python(
    args: Sequence[str], cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_line(text: str) -> str:
    """Assert ``text`` is exactly one line (newline-terminated) and return it."""
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text[:-1]


def b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def issue(*extra: str, env: Mapping[str, str] | None = None) -> str:
    """A token from ``agentsudo issue`` (default key directory ./keys)."""
    args = extra or ("--agent", "SupportBot", "--scopes", "read:orders write:refunds")
    result = invoke("issue", *args, env=env)
    assert result.exit_code == 0, result.stderr
    return one_line(result.stdout)


def claims_of(token: str) -> dict[str, object]:
    return unb64(token.split(".")[1])


def widened(token: str) -> str:
    """The same token with its scope claim widened to ``**``; the signature is kept."""
    header, payload, signature = token.split(".")
    claims = unb64(payload)
    claims["scope"] = "**"
    return f"{header}.{b64(claims)}.{signature}"


def flipped(token: str) -> str:
    """The same token with one signature character changed."""
    head, last = token[:-6], token[-6:]
    swapped = last[0].translate(str.maketrans("ABab", "BAba")) if last[0] in "ABab" else "A"
    return head + swapped + last[1:]

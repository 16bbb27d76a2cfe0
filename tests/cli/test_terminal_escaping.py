"""Untrusted text never drives the terminal nor forges a row (issue 8, item 5).

An agent name, function name, argument, reason or claim holding ESC, a
newline, a C1 control or a bidi override is printed escaped, on its own line,
by ``approvals``, ``approvals show``, ``approve``, ``audit show``, ``inspect``,
``verify`` and error messages. The CLI runs with ``color=True`` (as on a
terminal, where click strips nothing), and the two table commands also run as
the installed ``agentsudo`` on a real pseudo-terminal.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agentsudo_cli._common import terminal_safe
from agentsudo_cli.main import cli
from agentsudo_tokens import KeyDirectory
from agentsudo_tokens.audit.file import AuditFile
from agentsudo_tokens.config import Settings
from agentsudo_tokens.guard.decision import ApprovalContext
from agentsudo_tokens.guard.elevation import _Waiting, ask
from agentsudo_tokens.state import Store, default_store_url, open_store
from agentsudo_tokens.state.approvals import pending
from agentsudo_tokens.tokens.jws import encode

AGENTSUDO = str(Path(sys.executable).with_name("agentsudo"))
FORGED_ROW = "apr_FORGEDFORGEDFORGEDFORGED  Admin  read:x  harmless()  9m left"
# ESC sequences (clear screen, window title, colour), CR LF and a forged row, C1 CSI, bidi
HOSTILE = f"Evil\x1b]0;owned\x07\x1b[2J\x1b[31m\r\n{FORGED_ROW}\n\x9b2J\u202etxt.exe\x00"


def _lines(output: str) -> list[str]:
    """The output's lines, each checked: nothing a terminal would act on."""
    lines = output.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        assert line.isprintable(), f"raw control or format character in {line!r}"
    return lines


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, color=True)  # color: click strips nothing, as on a tty


@pytest.fixture
def default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The default configuration: ``./keys`` and its SQLite state file, in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    KeyDirectory.init(tmp_path / "keys")
    return open_store(default_store_url(Settings.from_env()))


def _hostile_request(store: Store) -> _Waiting:
    """A waiting call whose agent, token id, scope, function, argument and reason are hostile."""
    agent: Any = SimpleNamespace(name=HOSTILE, jti=HOSTILE)  # a name no issuer would sign
    context = ApprovalContext(
        f"mod.f{HOSTILE}", {"query": HOSTILE, HOSTILE: 1}, reason=f"not granted{HOSTILE}"
    )
    waiting = _Waiting(ask(timeout=60), store, agent, f"write:db{HOSTILE}", context)
    waiting.start()
    return waiting


def test_terminal_safe_escapes_what_a_terminal_acts_on() -> None:
    assert terminal_safe("SupportBot read:orders") == "SupportBot read:orders"
    assert terminal_safe("a\x1b[2Jb\nc\r\td\x7f\x9b\u2028\u202e\u00a0\ud800\U000e0001") == (
        "a\\x1b[2Jb\\nc\\r\\td\\x7f\\x9b\\u2028\\u202e\\xa0\\ud800\\U000e0001"
    )
    assert terminal_safe("caf\u00e9 \\n") == "caf\u00e9 \\n"  # printable text stays as it is
    assert terminal_safe(HOSTILE).isprintable()


def test_approvals_list_show_and_answer_escape_everything(default_store: Store) -> None:
    waiting = _hostile_request(default_store)
    request_id = waiting.request.id
    assert [r.id for r in pending(default_store)] == [request_id]

    listed = _run(["approvals"])
    assert listed.exit_code == 0, listed.stderr
    (row,) = _lines(listed.stdout)  # one request, one row: nothing forged
    assert row.startswith(f"{request_id}  Evil\\x1b]0;owned\\x07")
    assert not any(line.startswith("apr_FORGED") for line in listed.stdout.splitlines())

    shown = _run(["approvals", "show", request_id])
    assert shown.exit_code == 0, shown.stderr
    lines = _lines(shown.stdout)
    labels = [line[:11] for line in lines if not line.startswith("  ")]
    assert labels == [
        "request    ", "agent      ", "token jti  ", "scope      ", "function   ",
        "reason     ", "asked at   ", "expires    ", "arguments  ",
    ]  # fmt: skip
    arguments = [line for line in lines if line.startswith("  ")]
    assert len(arguments) == 2  # two arguments, two lines, however hostile their text
    assert all("FORGED" not in line or line.startswith("  ") for line in lines[9:])
    _lines(shown.stderr)

    as_json = _run(["approvals", "--json"])
    _lines(as_json.stdout)
    assert as_json.stdout.isascii()
    (data,) = json.loads(as_json.stdout)
    assert data["agent"] == HOSTILE and data["arguments"]["query"] == HOSTILE  # exact, escaped

    approved = _run(["approve", request_id])
    assert approved.exit_code == 0, approved.stderr
    (line,) = _lines(approved.stdout)
    assert line.startswith(f"approved: {request_id}: agent ")


def _audit_file(path: Path) -> None:
    log = AuditFile(path)
    try:
        for outcome in ("denied", f"allowed{HOSTILE}"):
            log.append(
                {
                    "time": f"2025-01-01T00:00:00Z{HOSTILE}",
                    "outcome": outcome,
                    "agent": HOSTILE,
                    "jti": HOSTILE,
                    "scope": f"write:db{HOSTILE}",
                    "function": f"mod.f{HOSTILE}",
                    "signed": True,
                    "reason": HOSTILE,
                }
            )
    finally:
        log.close()


def test_audit_show_escapes_every_field(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _audit_file(path)
    table = _run(["audit", "show", str(path)])
    assert table.exit_code == 0, table.stderr
    header, *rows = _lines(table.stdout)
    assert header.startswith("TIME") and len(rows) == 2  # two events, two rows
    assert all(row.startswith("2025-01-01 00:00:00 ") for row in rows)
    assert not any("FORGED" in row and not row.startswith("2025") for row in rows)
    as_json = _run(["audit", "show", str(path), "--json"])
    assert len(_lines(as_json.stdout)) == 2 and as_json.stdout.isascii()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_inspect_escapes_a_hostile_token(tmp_path: Path) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": HOSTILE}
    claims = {"sub": HOSTILE, "scope": HOSTILE, "iss": HOSTILE, "exp": int(time.time()) + 60}
    token = ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(b"\0" * 64)]
    )
    shown = _run(["inspect", token])
    _lines(shown.stdout)
    _lines(shown.stderr)
    if shown.exit_code == 0:  # decoded: shown faithfully, as JSON escapes
        assert json.loads(shown.stdout)["claims"]["sub"] == HOSTILE
        assert shown.stdout.isascii()
    else:  # refused as malformed: one safe line
        assert len(_lines(shown.stderr)) == 1


def test_verify_and_errors_escape_a_hostile_signed_token(tmp_path: Path) -> None:
    keys = KeyDirectory.init(tmp_path / "keys")
    key = keys.signing_key()
    now = int(time.time())
    claims = {
        "iss": "agentsudo", "sub": HOSTILE, "aud": "agentsudo", "iat": now, "nbf": now,
        "exp": now + 300, "jti": "j" * 22, "scope": "read:orders",
    }  # fmt: skip
    token = encode({"alg": key.alg, "typ": "at+jwt", "kid": key.kid}, claims, key)
    env = {"AGENTSUDO_KEYS_DIR": str(tmp_path / "keys")}
    for args in (["verify", token], ["verify", token, "--json"]):
        checked = CliRunner().invoke(cli, args, env=env, color=True)
        out, err = _lines(checked.stdout), _lines(checked.stderr)
        assert len(out) + len(err) == 1, (out, err)  # one line, however hostile the claims
    missing = _run(["approve", f"apr_{HOSTILE}"])
    assert missing.exit_code != 0 and len(_lines(missing.stderr)) == 1


def _on_a_terminal(args: list[str], cwd: Path) -> str:
    """Run the installed ``agentsudo`` with a pseudo-terminal as stdout; what the terminal got."""
    import pty

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [AGENTSUDO, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        received = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            received += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert done.returncode == 0, done.stderr
    return received.decode().replace("\r\n", "\n")  # the tty turns \n into \r\n


def test_a_real_terminal_receives_no_control_characters(
    default_store: Store, tmp_path: Path
) -> None:
    waiting = _hostile_request(default_store)
    (row,) = _lines(_on_a_terminal(["approvals"], tmp_path))
    assert row.startswith(waiting.request.id)
    shown = _lines(_on_a_terminal(["approvals", "show", waiting.request.id], tmp_path))
    assert len(shown) == 11
    _audit_file(tmp_path / "audit.jsonl")
    assert len(_lines(_on_a_terminal(["audit", "show", "audit.jsonl"], tmp_path))) == 3

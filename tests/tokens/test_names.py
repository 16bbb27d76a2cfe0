"""Agent names: one grammar, enforced where a name is minted, built and verified.

``[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}``: an ASCII identifier. Nothing in a name
can forge a line on a terminal (ESC, newlines, bidi overrides, zero-width
characters), and two names that look alike are the same name (no homoglyphs,
no Unicode normalization forms). The hostile-token table in ``test_verifier``
covers the verifying side claim by claim; here: the issuer, ``Agent(...)``, the
real ``agentsudo`` command, and every name the README and the examples use.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import Agent, ConfigError, Issuer, JwksFile, KeyDirectory, Verifier
from agentsudo_tokens.tokens.claims import AGENT_NAME_GRAMMAR, check_agent_name, is_agent_name
from agentsudo_tokens.tokens.keys import b64url_encode

AGENTSUDO = Path(sys.executable).parent / "agentsudo"
ROOT = Path(__file__).resolve().parents[2]

GOOD = [
    "SupportBot",
    "AnalyticsBot",
    "A",
    "7",
    "support-bot",
    "support_bot.v2",
    "support-bot@team.example",
    "svc:orders",
    "x" * 128,
]
# Each one was accepted by the issuer or by Agent(...) before the grammar (printable
# Unicode was enough for the issuer, any non-empty string for Agent).
HOSTILE = [
    pytest.param("Support Bot", id="space"),
    pytest.param("Supp\u043ertBot", id="cyrillic-homoglyph"),
    pytest.param("\uff33upportBot", id="fullwidth-letter"),
    pytest.param("Bo\u0308t", id="combining-mark"),
    pytest.param("B\u00f8t", id="non-ascii-letter"),
    pytest.param("-SupportBot", id="leading-dash"),
    pytest.param(".SupportBot", id="leading-dot"),
    pytest.param("team/SupportBot", id="slash"),
    pytest.param("x" * 129, id="129-characters"),
    pytest.param("Support\x1b[2K\rBot", id="esc-sequence"),
    pytest.param("SupportBot\nallowed", id="newline"),
    pytest.param("Support\u202etoB", id="bidi-override"),
    pytest.param("Support\u200bBot", id="zero-width-space"),
    pytest.param("\ufeffSupportBot", id="byte-order-mark"),
    pytest.param("SupportBot\ud800", id="lone-surrogate"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("name", GOOD)
def test_the_grammar_accepts_identifiers(name: str) -> None:
    assert is_agent_name(name)
    assert check_agent_name(name) == name


@pytest.mark.parametrize("name", [*HOSTILE, 7, None, b"SupportBot", ["SupportBot"]])
def test_the_grammar_refuses_anything_else_with_a_safe_one_line_message(name: Any) -> None:
    assert not is_agent_name(name)
    with pytest.raises(ConfigError) as info:
        check_agent_name(name)
    message = str(info.value)
    assert message.isascii() and message.isprintable()  # escaped: nothing reaches a terminal raw
    assert AGENT_NAME_GRAMMAR in message
    assert len(message) < 250  # a long name is shortened


@pytest.mark.parametrize("name", HOSTILE)
def test_the_issuer_refuses_a_name_outside_the_grammar(issuer: Issuer, name: str) -> None:
    with pytest.raises(ConfigError, match="agent: expected 1 to 128 ASCII"):
        issuer.issue(name, "read:orders")


@pytest.mark.parametrize("name", HOSTILE)
def test_an_in_process_agent_refuses_a_name_outside_the_grammar(name: str) -> None:
    with pytest.raises(ConfigError, match="agent name: expected 1 to 128 ASCII"):
        Agent(name, ["read:orders"])


@pytest.mark.parametrize("name", GOOD)
def test_a_good_name_mints_builds_and_verifies(
    issuer: Issuer, key_dir: KeyDirectory, name: str
) -> None:
    token = issuer.issue(name, "read:orders").token
    agent = Agent.from_token(token, verifier=Verifier(JwksFile(key_dir.jwks_path)))
    assert agent.name == name
    assert Agent(name, ["read:orders"]).name == name


def _names_in_docs() -> set[str]:
    """Every agent name the README and the examples use, as users will copy them."""
    patterns = [
        r"Agent\((?:name=)?\"([^\"]*)\"",
        r"\.issue\(\s*\"([^\"]*)\"",
        r"--agent[ =]\"?([^\s\"']+)",
        r"\"--agent\",\s*\"([^\"]*)\"",
        r"\"sub\": \"([^\"]*)\"",
    ]
    files = [ROOT / "README.md", *sorted((ROOT / "examples").rglob("*.py"))]
    names: set[str] = set()
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            names.update(re.findall(pattern, text))
    return names - {"NAME", "NAME`", "A]"}  # placeholders in the usage summary


def test_every_name_in_the_readme_and_examples_follows_the_grammar() -> None:
    names = _names_in_docs()
    assert {"SupportBot", "AnalyticsBot"} <= names  # the scan finds what it should
    assert [name for name in sorted(names) if not is_agent_name(name)] == []


# --- the real command, default configuration -------------------------------------------


def _agentsudo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    return subprocess.run(
        [str(AGENTSUDO), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Support Bot", id="space"),
        pytest.param("Supp\u043ertBot", id="cyrillic-homoglyph"),
        pytest.param("Bo\u0308t", id="combining-mark"),
    ],
)
def test_agentsudo_issue_refuses_a_name_outside_the_grammar(tmp_path: Path, name: str) -> None:
    assert _agentsudo("keys", "init", cwd=tmp_path).returncode == 0
    proc = _agentsudo("issue", "--agent", name, "--scopes", "read:orders", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "agent: expected 1 to 128 ASCII" in lines[0]
    assert lines[0].isascii() and "Traceback" not in proc.stderr


def test_agentsudo_verify_refuses_a_signed_token_whose_sub_forges_a_terminal_line(
    tmp_path: Path,
) -> None:
    """Signed with the real key: only the name is wrong, and it must not reach stdout or stderr."""
    assert _agentsudo("keys", "init", cwd=tmp_path).returncode == 0
    key = KeyDirectory(tmp_path / "keys").signing_key()
    now = int(time.time())
    forged = "Mallory\x1b[1A\x1b[2K\rvalid: agent 'SupportBot'\n\u202e"
    claims = {
        "iss": "agentsudo",
        "sub": forged,
        "aud": "agentsudo",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-0123456789abcdef",
        "scope": "read:orders",
    }
    header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    signing_input = ".".join(
        b64url_encode(json.dumps(part).encode("utf-8")) for part in (header, claims)
    )
    token = f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"

    proc = _agentsudo("verify", token, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout == ""
    assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "claim 'sub': expected an agent name" in proc.stderr

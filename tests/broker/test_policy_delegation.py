"""The policy's delegation keys (issue 10 part 1): ``delegable`` and ``max_depth``.

Fail safe by default (nothing delegable, one exchange deep once it is); every
bad value is one line naming the file, the line and the key, through
``parse_policy`` and the installed ``agentsudo policy check``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from installed_cli import sh

from agentsudo_tokens.broker.exchange import delegation_rules
from agentsudo_tokens.broker.policy import PolicyError, parse_policy
from agentsudo_tokens.tokens.delegation import MAX_DEPTH

BASE = """[broker]
admins = ["uid:0"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
callers = ["uid:0"]
"""


def _policy(extra: str = "") -> str:
    return BASE + extra


def test_defaults_pass_nothing_on() -> None:
    rules = parse_policy(_policy()).agents["Orchestrator"]
    assert rules.delegable == () and rules.max_depth == 1
    scopes, depth = delegation_rules(parse_policy(_policy()), "Orchestrator")
    assert scopes.scopes == () and depth == 1
    assert delegation_rules(parse_policy(_policy()), "Unknown")[1] == 0


@pytest.mark.parametrize(
    ("line", "delegable"),
    [
        ("delegable = true", ("read:*", "write:refunds")),
        ("delegable = false", ()),
        ('delegable = ["read:orders", "read:*"]', ("read:orders", "read:*")),
    ],
)
def test_delegable_values(line: str, delegable: tuple[str, ...]) -> None:
    policy = parse_policy(_policy(line + "\nmax_depth = 3\n"))
    assert policy.agents["Orchestrator"].delegable == delegable
    assert policy.agents["Orchestrator"].max_depth == 3


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('delegable = ["write:*"]', "delegable[0]", "within the agent's scopes"),
        ('delegable = ["read:orders", "delete:customer"]', "delegable[1]", "within"),
        ('delegable = ["read:**"]', "delegable[0]", "within"),
        ('delegable = ["read:ord?ers"]', "delegable[0]", "expected segments"),
        ('delegable = "read:*"', "delegable", "expected true, false or an array"),
        ("delegable = [1]", "delegable[0]", "expected a scope"),
        ("max_depth = 0", "max_depth", "from 1 to 8"),
        (f"max_depth = {MAX_DEPTH + 1}", "max_depth", "from 1 to 8"),
        ('max_depth = "2"', "max_depth", "whole number"),
        ("max_depth = true", "max_depth", "whole number"),
        ("max_depth = 1.5", "max_depth", "whole number"),
    ],
)
def test_bad_values_name_the_line_and_key(line: str, key: str, words: str) -> None:
    text = _policy(line + "\n")
    with pytest.raises(PolicyError) as bad:
        parse_policy(text, source="agentsudo.toml")
    assert bad.value.line == 7
    assert bad.value.key == f"agents.Orchestrator.{key}"
    assert words in str(bad.value)
    assert str(bad.value).startswith(f"agentsudo.toml:7: agents.Orchestrator.{key}: ")


def test_policy_check_reports_the_line(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(_policy('delegable = ["read:*"]\nmax_depth = 2\n'))
    good.chmod(0o600)
    done = sh("policy", "check", str(good), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(_policy('delegable = ["read:*"]\nmax_depth = 99\n'))
    bad.chmod(0o600)
    done = sh("policy", "check", str(bad), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"agentsudo: {bad}:8: agents.Orchestrator.max_depth: expected a whole number "
        "from 1 to 8, found 99\n"
    )

"""``agentsudo issue``: the token alone on stdout, scopes, TTL, audiences, JSON, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import (
    claims_of,
    invoke,
    issue,
    one_line,
    unb64,
)

from agentsudo_tokens import JwksFile, KeyDirectory, Verifier

# --- issue -----------------------------------------------------------------


def test_issue_prints_the_token_alone(here: KeyDirectory, tmp_path: Path) -> None:
    result = invoke("issue", "--agent", "SupportBot", "--scopes", "read:orders,write:refunds")
    assert result.exit_code == 0
    assert result.stderr == ""
    token = one_line(result.stdout)
    assert token == token.strip() and token.count(".") == 2
    claims = Verifier(JwksFile(here.jwks_path)).verify(token)
    assert claims.subject == "SupportBot"
    assert claims.scopes.claim() == "read:orders write:refunds"
    assert claims.issuer == "agentsudo" and list(claims.audience) == ["agentsudo"]
    assert claims.expires_at - claims_of(token)["iat"] == 900  # default TTL 15m


@pytest.mark.parametrize(
    "scope_args",
    [
        ["--scopes", "read:orders,write:refunds"],
        ["--scopes", "read:orders write:refunds"],
        ["--scopes", " read:orders ,  write:refunds "],
        ["--scopes", "read:orders", "--scopes", "write:refunds"],
        ["--scope", "read:orders", "--scopes", "write:refunds"],
    ],
    ids=["comma", "space", "loose", "repeated", "alias"],
)
def test_issue_scope_forms(here: KeyDirectory, scope_args: list[str]) -> None:
    token = issue("--agent", "Bot", *scope_args)
    assert claims_of(token)["scope"] == "read:orders write:refunds"


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("15m", 900), ("90s", 90), ("2h", 7200), ("600", 600), ("24h", 86400)]
)
def test_issue_ttl(here: KeyDirectory, ttl: str, seconds: int) -> None:
    claims = claims_of(issue("--agent", "Bot", "--scopes", "x", "--ttl", ttl))
    assert claims["exp"] - claims["iat"] == seconds  # type: ignore[operator]


def test_issue_ttl_over_the_maximum_is_refused(here: KeyDirectory) -> None:
    result = invoke("issue", "--agent", "Bot", "--scopes", "x", "--ttl", "48h")
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert "ttl" in line and "86400" in line


@pytest.mark.parametrize("ttl", ["abc", "15x", "0", "0m", "-5m", "1.5h", "", "15 m", "1e3"])
def test_issue_bad_ttl_is_a_usage_error(here: KeyDirectory, ttl: str) -> None:
    result = invoke("issue", "--agent", "Bot", "--scopes", "x", f"--ttl={ttl}")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--ttl" in result.stderr


@pytest.mark.parametrize(
    "scope",
    [
        "read:",
        ":read",
        "read::x",
        "read:ord?rs",
        "read:[a]",
        "ré:x",
        "read:\tx",
        "read:\u00a0x",
        "",
    ],
    ids=[
        "trailing",
        "leading",
        "empty-seg",
        "question",
        "brackets",
        "unicode",
        "tab",
        "nbsp",
        "none",
    ],
)
def test_issue_invalid_scope_is_one_line(here: KeyDirectory, scope: str) -> None:
    result = invoke("issue", "--agent", "Bot", "--scopes", scope)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert one_line(result.stderr).startswith("agentsudo: ")


@pytest.mark.parametrize("agent", ["", " Bot", "Bot\n", "a" * 300])
def test_issue_invalid_agent_name(here: KeyDirectory, agent: str) -> None:
    result = invoke("issue", "--agent", agent, "--scopes", "x")
    assert result.exit_code == 2
    assert result.stdout == ""


def test_issue_double_star_warns_on_stderr_only(here: KeyDirectory) -> None:
    result = invoke("issue", "--agent", "RootBot", "--scopes", "**")
    assert result.exit_code == 0
    token = one_line(result.stdout)
    assert claims_of(token)["scope"] == "**"
    warning = one_line(result.stderr)
    assert "warning" in warning and "**" in warning
    assert invoke("verify", token, "--scope", "delete:everything").exit_code == 0


def test_issue_json(here: KeyDirectory) -> None:
    result = invoke("issue", "--agent", "Bot", "--scopes", "read:x", "--json")
    assert result.exit_code == 0
    assert result.stderr == ""
    payload = json.loads(result.stdout)
    assert set(payload) == {"token", "header", "claims"}
    assert payload["header"] == {"alg": "EdDSA", "typ": "at+jwt", "kid": here.active().kid}
    assert payload["claims"] == claims_of(payload["token"])
    assert payload["claims"]["sub"] == "Bot" and payload["claims"]["scope"] == "read:x"
    assert invoke("verify", payload["token"]).exit_code == 0


def test_issue_json_error_is_json(here: KeyDirectory) -> None:
    result = invoke("issue", "--agent", "Bot", "--scopes", "read:", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": "InvalidScopeError",
        "message": json.loads(result.stdout)["message"],
    }


def test_issue_several_audiences(here: KeyDirectory) -> None:
    token = issue("--agent", "Bot", "--scopes", "x", "--aud", "billing", "--aud", "orders")
    assert claims_of(token)["aud"] == ["billing", "orders"]
    assert invoke("verify", token, "--aud", "orders").exit_code == 0
    assert invoke("verify", token, "--aud", "billing").exit_code == 0
    assert invoke("verify", token, "--aud", "shipping").exit_code == 1
    single = issue("--agent", "Bot", "--scopes", "x", "--aud", "billing")
    assert claims_of(single)["aud"] == "billing"


def test_issue_reads_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeyDirectory.init(tmp_path / "elsewhere" / "issuer-keys")
    monkeypatch.chdir(tmp_path)  # no ./keys here
    env = {
        "AGENTSUDO_KEYS_DIR": str(keys.path),
        "AGENTSUDO_ISSUER": "acme-issuer",
        "AGENTSUDO_AUDIENCE": "billing",
        "AGENTSUDO_TTL": "5m",
    }
    token = issue("--agent", "Bot", "--scopes", "x", env=env)
    claims = claims_of(token)
    assert unb64(token.split(".")[0])["kid"] == keys.active().kid
    assert (claims["iss"], claims["aud"]) == ("acme-issuer", "billing")
    assert claims["exp"] - claims["iat"] == 300  # type: ignore[operator]
    # the same variables make verify expect the same issuer and audience
    assert invoke("verify", token, env=env).exit_code == 0
    jwks_only = {"AGENTSUDO_JWKS": str(keys.jwks_path)}
    assert invoke("verify", token, env=jwks_only).exit_code == 1  # expects iss/aud agentsudo


def test_issue_flags_beat_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = KeyDirectory.init(tmp_path / "real")
    decoy = KeyDirectory.init(tmp_path / "decoy")
    monkeypatch.chdir(tmp_path)
    env = {
        "AGENTSUDO_KEYS_DIR": str(decoy.path),
        "AGENTSUDO_AUDIENCE": "from-env",
        "AGENTSUDO_TTL": "10m",
    }
    flags = ["--keys-dir", str(real.path), "--aud", "from-flag", "--ttl", "2m"]
    token = issue("--agent", "Bot", "--scopes", "x", *flags, env=env)
    claims = claims_of(token)
    assert unb64(token.split(".")[0])["kid"] == real.active().kid
    assert claims["aud"] == "from-flag"
    assert claims["exp"] - claims["iat"] == 120  # type: ignore[operator]


def test_ttl_flag_beats_an_out_of_range_ttl_variable(here: KeyDirectory) -> None:
    env = {"AGENTSUDO_TTL": "48h"}
    result = invoke("issue", "--agent", "Bot", "--scopes", "x", "--ttl", "5m", env=env)
    assert result.exit_code == 0, result.stderr
    claims = claims_of(one_line(result.stdout))
    assert claims["exp"] - claims["iat"] == 300  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "value"),
    [("AGENTSUDO_TTL", "soon"), ("AGENTSUDO_TTL", "48h"), ("AGENTSUDO_ISSUER", " ")],
)
def test_issue_bad_environment_is_a_config_error(here: KeyDirectory, name: str, value: str) -> None:
    result = invoke("issue", "--agent", "Bot", "--scopes", "x", env={name: value})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert name in one_line(result.stderr) or "ttl" in result.stderr

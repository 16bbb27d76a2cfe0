"""``agentsudo verify`` and ``agentsudo inspect``: verified claims, or one line saying why not."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import (
    b64,
    claims_of,
    flipped,
    invoke,
    one_line,
    widened,
)

from agentsudo_tokens import Issuer, KeyDirectory

# --- verify ----------------------------------------------------------------


def test_verify_token_argument_with_scopes(token: str) -> None:
    result = invoke("verify", token, "--scope", "read:orders", "--scope", "write:refunds")
    assert result.exit_code == 0
    assert result.stderr == ""
    line = one_line(result.stdout)
    assert line.startswith("valid: agent 'SupportBot'")
    assert "read:orders" in line and token not in line


def test_verify_without_scopes(token: str) -> None:
    assert invoke("verify", token).exit_code == 0


def test_verify_reads_stdin(token: str) -> None:
    result = invoke("verify", "-", "--scope", "read:orders", input=token + "\n")
    assert result.exit_code == 0
    assert invoke("verify", "-", input=widened(token) + "\n").exit_code == 1


def test_verify_reads_agentsudo_token(token: str) -> None:
    env = {"AGENTSUDO_TOKEN": token}
    assert invoke("verify", "--scope", "write:refunds", env=env).exit_code == 0
    # an explicit TOKEN argument beats the variable, both ways
    assert invoke("verify", widened(token), env=env).exit_code == 1
    assert invoke("verify", token, env={"AGENTSUDO_TOKEN": "garbage"}).exit_code == 0


def test_verify_missing_scope_is_denied_without_listing_scopes(token: str) -> None:
    result = invoke("verify", token, "--scope", "read:orders", "--scope", "delete:customer")
    assert result.exit_code == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert "delete:customer" in line and "SupportBot" in line
    assert "read:orders" not in line and "write:refunds" not in line
    assert token not in line


@pytest.mark.parametrize("scope", ["read:*", "**", "read:**", "*"])
def test_verify_wildcard_required_scope_is_a_usage_error(token: str, scope: str) -> None:
    result = invoke("verify", token, "--scope", scope)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert one_line(result.stderr).startswith("agentsudo: ")


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (widened, "BadSignatureError"),
        (flipped, "BadSignatureError"),
        (lambda t: t + "x", "MalformedTokenError"),
        (lambda t: ".".join(t.split(".")[:2]) + ".", "MalformedTokenError"),
        (lambda t: "garbage", "MalformedTokenError"),
    ],
    ids=["widened-scope", "flipped-signature", "appended", "no-signature", "garbage"],
)
def test_verify_tampered_token_is_rejected(
    token: str, tamper: Callable[[str], str], error: str
) -> None:
    bad = tamper(token)
    result = invoke("verify", bad, "--scope", "read:orders")
    assert result.exit_code == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("agentsudo: token rejected")
    assert token not in line and bad not in line
    as_json = invoke("verify", bad, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"] == error


def test_verify_expired_token(here: KeyDirectory) -> None:
    expired = Issuer(here.signing_key()).issue(
        "Bot", ["read:orders"], ttl=60, now=time.time() - 3600
    )
    result = invoke("verify", expired.token, "--scope", "read:orders")
    assert result.exit_code == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert "expired" in line and expired.token not in line
    as_json = invoke("verify", expired.token, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"] == "ExpiredTokenError"


def test_verify_json_success(token: str, here: KeyDirectory) -> None:
    result = invoke("verify", token, "--json", "--scope", "write:refunds")
    assert result.exit_code == 0
    assert result.stderr == ""
    payload = json.loads(one_line(result.stdout))
    assert payload["ok"] is True
    assert payload["agent"] == "SupportBot"
    assert payload["scopes"] == ["read:orders", "write:refunds"]
    assert payload["allowed"] == ["write:refunds"]
    assert payload["kid"] == here.active().kid
    assert payload["jti"] == claims_of(token)["jti"]
    assert token not in result.stdout


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--scope", "delete:customer"], "PermissionDeniedError"),
        (["--aud", "shipping"], "WrongAudienceError"),
    ],
    ids=["missing-scope", "wrong-audience"],
)
def test_verify_json_failure(token: str, args: list[str], error: str) -> None:
    result = invoke("verify", token, "--json", *args)
    assert result.exit_code == 1
    assert result.stderr == ""
    payload = json.loads(one_line(result.stdout))
    assert payload["ok"] is False
    assert payload["error"] == error
    assert payload["message"]
    assert token not in result.stdout


def test_verify_wrong_audience(token: str) -> None:
    result = invoke("verify", token, "--aud", "shipping")
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert "shipping" in line and "agentsudo" in line


def test_verify_wrong_audience_from_environment(token: str) -> None:
    assert invoke("verify", token, env={"AGENTSUDO_AUDIENCE": "shipping"}).exit_code == 1
    # the flag beats the variable
    result = invoke("verify", token, "--aud", "agentsudo", env={"AGENTSUDO_AUDIENCE": "shipping"})
    assert result.exit_code == 0


def test_verify_with_jwks_from_another_directory(
    token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "service"
    other.mkdir()
    monkeypatch.chdir(other)  # no ./keys here
    assert invoke("verify", token).exit_code == 2  # no public keys found: a config error
    assert invoke("verify", token, "--jwks", "../keys/jwks.json").exit_code == 0
    absolute = str(tmp_path / "keys" / "jwks.json")
    assert invoke("verify", token, "--jwks", absolute).exit_code == 0
    assert invoke("verify", token, env={"AGENTSUDO_JWKS": absolute}).exit_code == 0


def test_verify_token_of_an_unknown_key(token: str, tmp_path: Path) -> None:
    stranger = KeyDirectory.init(tmp_path / "stranger")
    result = invoke("verify", token, "--jwks", str(stranger.jwks_path), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "UnknownKeyError"


@pytest.mark.parametrize(
    ("args", "stdin"), [([], None), (["-"], ""), (["-"], "\n"), (["  "], None)]
)
def test_verify_without_a_token_is_a_usage_error(
    here: KeyDirectory, args: list[str], stdin: str | None
) -> None:
    result = invoke("verify", *args, input=stdin)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "token" in result.stderr


# --- inspect ---------------------------------------------------------------


def test_inspect_shows_claims_and_says_not_verified(token: str, here: KeyDirectory) -> None:
    result = invoke("inspect", token)
    assert result.exit_code == 0
    assert "NOT VERIFIED" in one_line(result.stderr)
    shown = json.loads(result.stdout)
    assert shown["verified"] is False
    assert shown["header"] == {"alg": "EdDSA", "typ": "at+jwt", "kid": here.active().kid}
    assert shown["claims"] == claims_of(token)
    assert shown["expires"].startswith("in ")
    assert token not in result.stdout


def test_inspect_forged_token_is_shown_but_not_verified(token: str) -> None:
    result = invoke("inspect", widened(token))
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["verified"] is False and shown["claims"]["scope"] == "**"
    assert "NOT VERIFIED" in result.stderr


def test_inspect_expired_token(here: KeyDirectory) -> None:
    expired = Issuer(here.signing_key()).issue("Bot", ["x"], ttl=60, now=time.time() - 3600)
    result = invoke("inspect", expired.token)
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["expires"] == "expired"
    assert shown["claims"]["sub"] == "Bot"


def test_inspect_reads_stdin_and_the_environment(token: str) -> None:
    assert json.loads(invoke("inspect", "-", input=token).stdout)["claims"]["sub"] == "SupportBot"
    from_env = invoke("inspect", env={"AGENTSUDO_TOKEN": token})
    assert json.loads(from_env.stdout)["claims"]["sub"] == "SupportBot"


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "a.b.c", "!!!.???.###", b64({"alg": "none"}) + ".e30.", "eyJ9.eyJ9.AAAA"],
)
def test_inspect_garbage(garbage: str) -> None:
    result = invoke("inspect", garbage)
    assert result.exit_code == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("agentsudo: token rejected")

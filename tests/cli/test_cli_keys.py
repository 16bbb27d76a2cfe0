"""``agentsudo keys``: init, rotate, list, jwks, retire; no private key in any output."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cli_helpers import (
    PRIVATE_JWK_MEMBERS,
    agentsudo,
    invoke,
    issue,
    one_line,
    unb64,
)

from agentsudo_tokens import Issuer, KeyDirectory

# --- keys ------------------------------------------------------------------


def test_keys_init_makes_the_directory_and_prints_only_the_kid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("keys", "init")
    assert result.exit_code == 0
    kid = one_line(result.stdout)
    keys = tmp_path / "keys"
    assert KeyDirectory(keys).active().kid == kid
    assert (keys / ".gitignore").read_text() == "*\n!.gitignore\n!README.md\n"
    jwks = json.loads((keys / "jwks.json").read_text())
    assert [(k["kid"], k["alg"], k["use"]) for k in jwks["keys"]] == [(kid, "EdDSA", "sig")]
    assert stat.S_IMODE((keys / f"{kid}.pem").stat().st_mode) == 0o600
    assert "created" in one_line(result.stderr)


def test_keys_init_es256_mints_es256_tokens(tmp_path: Path) -> None:
    keys = tmp_path / "ec-keys"
    result = invoke("keys", "init", "--alg", "ES256", "--keys-dir", str(keys))
    assert result.exit_code == 0
    kid = one_line(result.stdout)
    (jwk,) = json.loads((keys / "jwks.json").read_text())["keys"]
    assert (jwk["kid"], jwk["alg"], jwk["kty"], jwk["crv"]) == (kid, "ES256", "EC", "P-256")
    token = issue("--agent", "Bot", "--scopes", "read:x", "--keys-dir", str(keys))
    assert unb64(token.split(".")[0]) == {"alg": "ES256", "typ": "at+jwt", "kid": kid}
    assert invoke("verify", token, "--keys-dir", str(keys), "--scope", "read:x").exit_code == 0


def test_keys_init_refuses_an_unknown_algorithm(tmp_path: Path) -> None:
    result = invoke("keys", "init", "--alg", "HS256", "--keys-dir", str(tmp_path / "k"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert not (tmp_path / "k").exists()


def test_keys_init_twice_is_refused_and_keeps_the_key(here: KeyDirectory) -> None:
    before = here.active().kid
    result = invoke("keys", "init")
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("agentsudo: ") and "already holds keys" in line
    assert here.active().kid == before


def test_keys_init_in_an_existing_directory_keeps_its_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "README.md").write_text("local keys\n")
    (keys / ".gitignore").write_text("*\n!.gitignore\n!README.md\n")
    assert invoke("keys", "init", "--keys-dir", str(keys)).exit_code == 0
    assert (keys / "README.md").read_text() == "local keys\n"


def test_keys_rotate_and_list(here: KeyDirectory) -> None:
    first = here.active().kid
    old_token = issue()
    result = invoke("keys", "rotate")
    assert result.exit_code == 0
    second = one_line(result.stdout)
    assert second != first and here.active().kid == second

    table = invoke("keys", "list")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["STATUS", "ALG", "CREATED", "KID"]
    assert [row.split()[0::3] for row in rows] == [["verifying", first], ["active", second]]
    assert all(row.split()[1] == "EdDSA" for row in rows)

    listed = invoke("keys", "list", "--json")
    assert listed.exit_code == 0
    records = json.loads(listed.stdout)
    assert [(r["kid"], r["status"], r["alg"]) for r in records] == [
        (first, "verifying", "EdDSA"),
        (second, "active", "EdDSA"),
    ]
    # rotation keeps earlier tokens verifying; new tokens use the new key
    assert invoke("verify", old_token).exit_code == 0
    assert unb64(issue().split(".")[0])["kid"] == second


def test_keys_rotate_can_change_algorithm(here: KeyDirectory) -> None:
    result = invoke("keys", "rotate", "--alg", "ES256")
    assert result.exit_code == 0
    assert here.active().alg == "ES256"
    assert unb64(issue().split(".")[0])["alg"] == "ES256"


def test_keys_jwks_prints_public_keys_only(here: KeyDirectory) -> None:
    assert invoke("keys", "rotate", "--alg", "ES256").exit_code == 0
    result = invoke("keys", "jwks")
    assert result.exit_code == 0
    assert result.stderr == ""
    jwks = json.loads(result.stdout)
    assert jwks == json.loads(here.jwks_path.read_text())
    assert {k["alg"] for k in jwks["keys"]} == {"EdDSA", "ES256"}
    for jwk in jwks["keys"]:
        assert jwk["use"] == "sig" and jwk["kid"]
        assert not PRIVATE_JWK_MEMBERS & set(jwk), jwk


def test_keys_retire_stops_trusting_the_key(here: KeyDirectory) -> None:
    old = here.active().kid
    old_token = issue()
    new = one_line(invoke("keys", "rotate").stdout)
    new_token = issue()

    result = invoke("keys", "retire", old)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "retired" in one_line(result.stderr)
    assert not (here.path / f"{old}.pem").exists()
    assert [k["kid"] for k in json.loads(here.jwks_path.read_text())["keys"]] == [new]
    statuses = {r["kid"]: r["status"] for r in json.loads(invoke("keys", "list", "--json").stdout)}
    assert statuses == {old: "retired", new: "active"}

    rejected = invoke("verify", old_token)
    assert rejected.exit_code == 1
    assert "token rejected" in one_line(rejected.stderr)
    as_json = invoke("verify", old_token, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"] == "UnknownKeyError"
    assert invoke("verify", new_token).exit_code == 0


def test_keys_retire_refuses_the_active_key(here: KeyDirectory) -> None:
    kid = here.active().kid
    result = invoke("keys", "retire", kid)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "active" in one_line(result.stderr)
    assert here.active().kid == kid
    assert (here.path / f"{kid}.pem").exists()
    assert invoke("issue", "--agent", "Bot", "--scopes", "x").exit_code == 0


def test_keys_retire_twice_is_refused(here: KeyDirectory) -> None:
    old = here.active().kid
    assert invoke("keys", "rotate").exit_code == 0
    assert invoke("keys", "retire", old).exit_code == 0
    again = invoke("keys", "retire", old)
    assert again.exit_code == 2
    assert "already retired" in one_line(again.stderr)


@pytest.mark.parametrize("kid", ["no-such-key", "../../etc/passwd"])
def test_keys_retire_refuses_an_unknown_key(here: KeyDirectory, kid: str) -> None:
    result = invoke("keys", "retire", kid)
    assert result.exit_code == 2
    one_line(result.stderr)


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
def test_commands_without_a_key_directory_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert one_line(result.stderr).startswith("agentsudo: ")


def test_a_missing_key_directory_says_how_to_make_one(
    tmp_path: Path, key_dir: KeyDirectory
) -> None:
    """A fresh directory, default settings: the error names the fix."""
    token = Issuer(key_dir.signing_key()).issue("SupportBot", ["read:orders"]).token
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    done = agentsudo(["verify", token], cwd=fresh)
    assert done.returncode == 2
    said = one_line(done.stderr)
    assert said.startswith("agentsudo: cannot read ") and "keys/jwks.json" in said
    assert said.endswith("; run 'agentsudo keys init', or set AGENTSUDO_JWKS")


def test_no_private_key_material_in_any_output(here: KeyDirectory) -> None:
    invoke("keys", "rotate", "--alg", "ES256")
    pem_lines = {
        line
        for pem in here.path.glob("*.pem")
        for line in pem.read_text().splitlines()
        if line and "-----" not in line
    }
    assert pem_lines
    token = issue()
    outputs = [
        invoke("keys", "list"),
        invoke("keys", "list", "--json"),
        invoke("keys", "jwks"),
        invoke("keys", "init"),
        invoke("issue", "--agent", "B", "--scopes", "x", "--json"),
        invoke("verify", token, "--json"),
        invoke("inspect", token),
        invoke("--debug", "keys", "list"),
    ]
    for result in outputs:
        for line in pem_lines:
            assert line not in result.stdout and line not in result.stderr


def test_a_private_key_readable_by_others_is_refused(here: KeyDirectory) -> None:
    (here.path / f"{here.active().kid}.pem").chmod(0o644)
    result = invoke("issue", "--agent", "Bot", "--scopes", "x")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "0600" in one_line(result.stderr)


@pytest.mark.parametrize("command", ["retire", "activate"])
def test_a_kid_that_starts_with_a_dash_is_a_kid_not_an_option(
    here: KeyDirectory, command: str
) -> None:
    """One kid in 64 starts with "-": it is named like any other (it used to read as an option)."""
    result = invoke("keys", command, "-h9zZ-unknown")
    assert result.exit_code == 2, result.output  # no such key (a config error), named
    assert "no such option" not in result.stderr.lower()
    assert "-h9zZ-unknown" in one_line(result.stderr)

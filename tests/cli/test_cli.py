"""The ``agentsudo`` command line (DESIGN.md section 5).

Most tests drive the root group in-process with click's ``CliRunner`` and check
stdout, stderr and the exit status separately; ``run``, the env-var path end to
end, ``--debug`` and the import-cost check use real subprocesses of the
installed ``agentsudo`` script.

Every invocation also checks what must never happen: a traceback, an unexpected
exception, or private key material on any stream.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from agentsudo_cli.main import cli
from agentsudo_tokens import Issuer, JwksFile, KeyDirectory, Verifier

AGENTSUDO = Path(sys.executable).parent / "agentsudo"
PRIVATE = "PRIVATE KEY"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


# --- helpers ---------------------------------------------------------------


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


@pytest.fixture
def here(tmp_path: Path, key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch) -> KeyDirectory:
    """Work in tmp_path, whose ./keys is the default key directory."""
    monkeypatch.chdir(tmp_path)
    return key_dir


@pytest.fixture
def token(here: KeyDirectory) -> str:
    return issue()


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

"""``agentsudo keys serve``: the current JWKS and nothing else, on loopback unless told."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from jwks_endpoint import get_path, start_keys_serve, stop_process

from agentsudo_cli.main import cli
from agentsudo_tokens import (
    KeyDirectory,
)
from agentsudo_tokens.tokens.jwks_remote import JwksUrl

# --- agentsudo keys serve ----------------------------------------------------------------


def test_keys_serve_publishes_the_current_jwks_and_nothing_else(
    key_dir: KeyDirectory, tmp_path: Path
) -> None:
    proc, port = start_keys_serve(key_dir, tmp_path / "serve.log")
    try:
        first = key_dir.active().kid
        status, headers, body = get_path(port, "/.well-known/jwks.json")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "max-age=60"
        assert [jwk["kid"] for jwk in json.loads(body)["keys"]] == [first]
        assert get_path(port, "/jwks.json")[2] == body
        assert get_path(port, "/jwks.json", "HEAD")[0] == 200

        second = key_dir.rotate().kid  # re-read per request
        listed = json.loads(get_path(port, "/.well-known/jwks.json?x=1")[2])["keys"]
        assert [jwk["kid"] for jwk in listed] == [first, second]
        source = JwksUrl(f"http://127.0.0.1:{port}/.well-known/jwks.json")
        assert set(source.keys) == {first, second}
        key_dir.retire(first)
        assert [jwk["kid"] for jwk in json.loads(get_path(port, "/jwks.json")[2])["keys"]] == [
            second
        ]

        for path in (
            "/",
            "/keys.json",
            f"/{second}.pem",
            "/.gitignore",
            "/../keys.json",
            "/..%2fkeys.json",
            "/.well-known/../keys.json",
            "/.well-known/jwks.json/../../keys.json",
            "//etc/passwd",
        ):
            status, _, body = get_path(port, path)
            assert status == 404, path
            assert b"PRIVATE" not in body and b"active" not in body
        assert get_path(port, "/jwks.json", "POST")[0] == 501
    finally:
        stop_process(proc)
    log = (tmp_path / "serve.log").read_text()
    assert "PRIVATE" not in log and "Traceback" not in log


def test_keys_serve_refuses_a_public_host_without_public(key_dir: KeyDirectory) -> None:
    result = CliRunner().invoke(
        cli, ["keys", "serve", "--host", "0.0.0.0", "--keys-dir", str(key_dir.path)]
    )
    assert result.exit_code == 2
    assert "not a loopback address; add --public" in result.stderr


def test_keys_serve_without_keys_fails_at_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["keys", "serve", "--port", "0", "--keys-dir", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert "agentsudo keys init" in result.stderr

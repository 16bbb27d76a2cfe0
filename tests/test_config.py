"""Settings: every AGENTSUDO_* variable, defaults, bad values, and no reading at import."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import ConfigError, Issuer, KeyDirectory, Settings
from agentsudo_tokens.config import parse_duration


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.token is None
    assert settings.keys_dir == Path("keys")
    assert settings.jwks is None
    assert settings.jwks_source == str(Path("keys") / "jwks.json")
    assert (settings.issuer, settings.audience) == ("agentsudo", "agentsudo")
    assert settings.store is None and settings.audit_log is None
    assert settings.require_signed is False
    assert (settings.ttl, settings.max_ttl, settings.leeway) == (900, 86400, 30)


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("AGENTSUDO_TOKEN", "eyJ.a.b", "token", "eyJ.a.b"),
        ("AGENTSUDO_TOKEN", "  eyJ.a.b\n", "token", "eyJ.a.b"),
        ("AGENTSUDO_TOKEN", "   ", "token", None),
        ("AGENTSUDO_KEYS_DIR", "/etc/agentsudo/keys", "keys_dir", Path("/etc/agentsudo/keys")),
        ("AGENTSUDO_KEYS_DIR", "", "keys_dir", Path("keys")),
        ("AGENTSUDO_JWKS", "/srv/jwks.json", "jwks", "/srv/jwks.json"),
        ("AGENTSUDO_JWKS", "", "jwks", None),
        ("AGENTSUDO_ISSUER", "corp", "issuer", "corp"),
        ("AGENTSUDO_ISSUER", " corp ", "issuer", "corp"),
        ("AGENTSUDO_AUDIENCE", "billing", "audience", "billing"),
        ("AGENTSUDO_STORE", "redis://localhost:6379/0", "store", "redis://localhost:6379/0"),
        ("AGENTSUDO_STORE", "", "store", None),
        (
            "AGENTSUDO_AUDIT_LOG",
            "/var/log/agentsudo.jsonl",
            "audit_log",
            Path("/var/log/agentsudo.jsonl"),
        ),
        ("AGENTSUDO_AUDIT_LOG", "", "audit_log", None),
        ("AGENTSUDO_REQUIRE_SIGNED", "1", "require_signed", True),
        ("AGENTSUDO_REQUIRE_SIGNED", "true", "require_signed", True),
        ("AGENTSUDO_REQUIRE_SIGNED", "YES", "require_signed", True),
        ("AGENTSUDO_REQUIRE_SIGNED", " on ", "require_signed", True),
        ("AGENTSUDO_REQUIRE_SIGNED", "0", "require_signed", False),
        ("AGENTSUDO_REQUIRE_SIGNED", "false", "require_signed", False),
        ("AGENTSUDO_REQUIRE_SIGNED", "no", "require_signed", False),
        ("AGENTSUDO_REQUIRE_SIGNED", "off", "require_signed", False),
        ("AGENTSUDO_REQUIRE_SIGNED", "", "require_signed", False),
        ("AGENTSUDO_TTL", "600", "ttl", 600),
        ("AGENTSUDO_TTL", "5m", "ttl", 300),
        ("AGENTSUDO_TTL", "", "ttl", 900),
        ("AGENTSUDO_MAX_TTL", "48h", "max_ttl", 172800),
        ("AGENTSUDO_LEEWAY", "10", "leeway", 10),
        ("AGENTSUDO_LEEWAY", "0", "leeway", 0),
        ("AGENTSUDO_LEEWAY", "0s", "leeway", 0),
        ("AGENTSUDO_LEEWAY", "5m", "leeway", 300),
        ("AGENTSUDO_OTEL", "1", "otel", True),
        ("AGENTSUDO_OTEL", "0", "otel", False),
    ],
)
def test_each_variable(variable: str, value: str, field: str, expected: Any) -> None:
    settings = Settings.from_env({variable: value})
    assert getattr(settings, field) == expected
    others = {f.name for f in dataclasses.fields(Settings)} - {field}
    assert all(getattr(settings, name) == getattr(Settings(), name) for name in others)


def test_jwks_source_prefers_agentsudo_jwks() -> None:
    assert Settings.from_env({"AGENTSUDO_KEYS_DIR": "/k"}).jwks_source == "/k/jwks.json"
    both = {"AGENTSUDO_KEYS_DIR": "/k", "AGENTSUDO_JWKS": "/elsewhere/jwks.json"}
    assert Settings.from_env(both).jwks_source == "/elsewhere/jwks.json"


BAD_VALUES = [
    ("AGENTSUDO_DPOP_KEY_FD", "three"),
    ("AGENTSUDO_DPOP_KEY_FD", "5"),  # no inode: any pipe at 5 would do
    ("AGENTSUDO_DPOP_KEY_FD", "1:1234"),  # stdout is never a key pipe
    ("AGENTSUDO_DPOP_KEY_FD", "-4:1234"),
    ("AGENTSUDO_DPOP_KEY_FD", "\u0665:1234"),  # a digit, not an ASCII one
    ("AGENTSUDO_DPOP_ORIGIN", "billing.example"),
    ("AGENTSUDO_DPOP_ORIGIN", "ftp://billing.example"),
    ("AGENTSUDO_DPOP_ORIGIN", "https://billing.example/api"),
    ("AGENTSUDO_DPOP_ORIGIN", "https://billing.example?x=1"),
    ("AGENTSUDO_DPOP_ORIGIN", "https://user@billing.example"),
    ("AGENTSUDO_DPOP_ORIGIN", "https://billing.example:99999"),
    ("AGENTSUDO_TTL", "abc"),
    ("AGENTSUDO_TTL", "0"),
    ("AGENTSUDO_TTL", "-5"),
    ("AGENTSUDO_TTL", "1.5"),
    ("AGENTSUDO_TTL", "15x"),
    ("AGENTSUDO_MAX_TTL", "forever"),
    ("AGENTSUDO_MAX_TTL", "0"),
    ("AGENTSUDO_LEEWAY", "abc"),
    ("AGENTSUDO_LEEWAY", "-1"),
    ("AGENTSUDO_LEEWAY", "301"),
    ("AGENTSUDO_LEEWAY", "1h"),
    ("AGENTSUDO_REQUIRE_SIGNED", "maybe"),
    ("AGENTSUDO_REQUIRE_SIGNED", "2"),
    ("AGENTSUDO_REQUIRE_SIGNED", "enabled"),
    ("AGENTSUDO_ISSUER", ""),
    ("AGENTSUDO_ISSUER", "   "),
    ("AGENTSUDO_ISSUER", "cörp"),
    ("AGENTSUDO_ISSUER", "a\x00b"),
    ("AGENTSUDO_AUDIENCE", ""),
    ("AGENTSUDO_AUDIENCE", "bill\ting"),
    ("AGENTSUDO_JWKS_CACHE_TTL", "soon"),
    ("AGENTSUDO_JWKS_MAX_STALE", "soon"),
    ("AGENTSUDO_BROKER", "broker.sock"),
    ("AGENTSUDO_BROKER", "unix://relative.sock"),
    ("AGENTSUDO_BROKER", "https://host/api"),
    ("AGENTSUDO_REVOCATIONS_REFRESH", "0"),
    ("AGENTSUDO_REVOCATIONS_MAX_STALE", "soon"),
    ("AGENTSUDO_OTEL", "maybe"),
]
# Free-form values (a token, paths, URLs) are checked where they are used.
FREE_FORM = {
    "AGENTSUDO_TOKEN",
    "AGENTSUDO_KEYS_DIR",
    "AGENTSUDO_JWKS",
    "AGENTSUDO_STORE",
    "AGENTSUDO_AUDIT_LOG",
    "AGENTSUDO_REVOCATIONS",
    "AGENTSUDO_BROKER_CREDENTIAL",
}


def test_every_setting_has_a_bad_value_test() -> None:
    from agentsudo_tokens import config

    variables = {
        v for v in vars(config).values() if isinstance(v, str) and v.startswith("AGENTSUDO_")
    }
    assert variables == {variable for variable, _ in BAD_VALUES} | FREE_FORM


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_bad_values_are_config_errors_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{variable}: expected ")


def test_a_ttl_above_the_maximum_is_the_issuers_to_refuse(key_dir: KeyDirectory) -> None:
    """Settings keep an AGENTSUDO_TTL above the maximum, so a --ttl flag can still override it."""
    settings = Settings.from_env(
        {"AGENTSUDO_TTL": "2d", "AGENTSUDO_MAX_TTL": "1d", "AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    )
    assert (settings.ttl, settings.max_ttl) == (172800, 86400)
    with pytest.raises(ConfigError) as info:
        Issuer.from_settings(settings).issue("SupportBot", "read:orders")
    assert (info.value.expected, info.value.found) == (86400, 172800)
    assert str(info.value) == (
        "AGENTSUDO_TTL: expected 1 to 86400 seconds (AGENTSUDO_MAX_TTL), found 172800"
    )
    flagged = Issuer.from_settings(settings.replace(ttl=600)).issue("SupportBot", "read:orders")
    assert flagged.claims["exp"] - flagged.claims["iat"] == 600


def test_leeway_is_bounded() -> None:
    assert Settings(leeway=300).leeway == 300
    for leeway in (-1, 301):
        with pytest.raises(ConfigError):
            Settings(leeway=leeway)


def test_from_env_reads_os_environ_when_given_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env() == Settings()
    monkeypatch.setenv("AGENTSUDO_ISSUER", "from-environ")
    monkeypatch.setenv("AGENTSUDO_TTL", "2m")
    settings = Settings.from_env()
    assert (settings.issuer, settings.ttl) == ("from-environ", 120)


def test_unrelated_variables_are_ignored() -> None:
    env = {"AGENTSUDO_UNKNOWN": "x", "PATH": "/bin", "agentsudo_ttl": "abc"}
    assert Settings.from_env(env) == Settings()


def test_replace_puts_flags_on_top_and_ignores_none() -> None:
    settings = Settings.from_env({"AGENTSUDO_ISSUER": "env", "AGENTSUDO_TTL": "10m"})
    flagged = settings.replace(issuer="flag", ttl=None, audience=None)
    assert (flagged.issuer, flagged.ttl, flagged.audience) == ("flag", 600, "agentsudo")
    assert settings.issuer == "env"
    with pytest.raises(ConfigError):  # a replaced value is checked like any other
        settings.replace(leeway=10**6)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.issuer = "other"  # type: ignore[misc]


def test_repr_hides_the_token() -> None:
    secret = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
    settings = Settings.from_env({"AGENTSUDO_TOKEN": secret})
    assert settings.token == secret
    for text in (repr(settings), str(settings), f"{settings}"):
        assert secret not in text
        assert "c2VjcmV0" not in text
        assert "token='<set>'" in text
    assert "token=None" in repr(Settings())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("900", 900),
        (900, 900),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        (" 15m ", 900),
        ("007", 7),
        ("999999999", 999999999),
    ],
)
def test_parse_duration_forms(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "m",
        "15 m",
        "1.5h",
        "1w",
        "15M",
        "-1",
        "0",
        "0s",
        0,
        -5,
        "1h30m",
        "１５",
        "1e3",
        "10" * 5,
    ],
    ids=repr,
)
def test_parse_duration_refuses_everything_else(text: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, name="--ttl")
    assert str(info.value).startswith("--ttl: ")


def test_parse_duration_refuses_bool() -> None:
    with pytest.raises(ConfigError):
        parse_duration(True)  # type: ignore[arg-type]


def test_importing_the_library_reads_no_environment(tmp_path: Path) -> None:
    garbage = {
        "AGENTSUDO_TTL": "abc",
        "AGENTSUDO_REQUIRE_SIGNED": "maybe",
        "AGENTSUDO_LEEWAY": "forever",
        "AGENTSUDO_TOKEN": "not-a-token",
        "AGENTSUDO_KEYS_DIR": str(tmp_path / "missing"),
    }
    env = {**os.environ, **garbage}
    script = (
        "import agentsudo_tokens\n"
        "from agentsudo_tokens import ConfigError, Settings\n"
        "try:\n"
        "    Settings.from_env()\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        "    print('accepted')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: AGENTSUDO_")  # set, and only read when asked


def test_jwks_cache_ttl_setting() -> None:
    assert Settings.from_env({}).jwks_cache_ttl == 300
    assert Settings.from_env({"AGENTSUDO_JWKS_CACHE_TTL": "1m"}).jwks_cache_ttl == 60
    with pytest.raises(ConfigError, match="AGENTSUDO_JWKS_CACHE_TTL"):
        Settings.from_env({"AGENTSUDO_JWKS_CACHE_TTL": "soon"})


@pytest.mark.parametrize(
    "value", ["http://192.0.2.1/jwks.json", "ftp://example.com/jwks.json", "/nonexistent/jwks.json"]
)
def test_a_bad_agentsudo_jwks_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Nothing is fetched from a refused URL; the message names the variable to fix."""
    from agentsudo_tokens import ConfigError, Verifier

    monkeypatch.setenv("AGENTSUDO_JWKS", value)
    with pytest.raises(ConfigError, match=r"^AGENTSUDO_JWKS: "):
        Verifier.from_settings()

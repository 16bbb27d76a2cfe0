"""The issuer: what a minted token holds, and what it refuses to mint."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import (
    ConfigError,
    InvalidScopeError,
    IssuedToken,
    Issuer,
    KeyDirectory,
    ScopeSet,
    Settings,
    Verifier,
)

AGENT = "SupportBot"


def _decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    return _decode(head), _decode(body)


def test_the_header_is_alg_typ_kid_and_nothing_else(issuer: Issuer) -> None:
    minted = issuer.issue(AGENT, ["read:orders"])
    header, _ = _parts(minted.token)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": issuer.key.kid}
    assert dict(minted.header) == header


def test_the_claims_are_exactly_the_registered_ones(issuer: Issuer) -> None:
    minted = issuer.issue(AGENT, ["read:orders", "write:refunds"], now=1_800_000_000)
    _, claims = _parts(minted.token)
    assert claims == {
        "iss": "agentsudo",
        "sub": AGENT,
        "aud": "agentsudo",
        "iat": 1_800_000_000,
        "nbf": 1_800_000_000,
        "exp": 1_800_000_000 + 900,
        "jti": claims["jti"],
        "scope": "read:orders write:refunds",
    }
    assert dict(minted.claims) == claims
    with pytest.raises(TypeError):
        minted.claims["scope"] = "**"  # type: ignore[index]


def test_the_default_ttl_is_fifteen_minutes(issuer: Issuer) -> None:
    before = int(time.time())
    claims = issuer.issue(AGENT, "read:orders").claims
    after = int(time.time())
    assert claims["exp"] - claims["iat"] == 900
    assert before <= claims["iat"] <= after


def test_now_sets_the_issue_time_and_is_truncated_to_whole_seconds(issuer: Issuer) -> None:
    claims = issuer.issue(AGENT, "read:orders", ttl=60, now=1_700_000_000.9).claims
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (
        1_700_000_000,
        1_700_000_000,
        1_700_000_060,
    )
    assert all(type(claims[name]) is int for name in ("iat", "nbf", "exp"))


def test_an_explicit_ttl_up_to_the_maximum_is_honoured(key_dir: KeyDirectory) -> None:
    issuer = Issuer(key_dir.signing_key(), max_ttl=3600)
    shortest = issuer.issue(AGENT, "read:orders", ttl=1, now=1_800_000_000).claims
    assert shortest["exp"] == 1_800_000_001
    minted = issuer.issue(AGENT, "read:orders", ttl=3600)
    assert minted.claims["exp"] - minted.claims["iat"] == 3600


@pytest.mark.parametrize(
    "ttl",
    [86401, 10**9, 0, -1, -900, 1.5, 900.0, "900", "15m", True, None],
    ids=lambda ttl: f"{type(ttl).__name__}-{ttl}",
)
def test_a_ttl_outside_one_to_max_is_refused(issuer: Issuer, ttl: Any) -> None:
    if ttl is None:  # None means "the default": make the default itself bad
        issuer = Issuer(issuer.key, default_ttl=86401)
    with pytest.raises(ConfigError) as info:
        issuer.issue(AGENT, "read:orders", ttl=ttl)
    assert info.value.expected == 86400


def test_the_maximum_ttl_is_configurable(key_dir: KeyDirectory) -> None:
    issuer = Issuer(key_dir.signing_key(), max_ttl=600)
    assert issuer.issue(AGENT, "read:orders", ttl=600).claims["exp"] > 0
    with pytest.raises(ConfigError):
        issuer.issue(AGENT, "read:orders", ttl=601)


@pytest.mark.parametrize(
    "scopes",
    [
        pytest.param([], id="empty-list"),
        pytest.param("", id="empty-string"),
        pytest.param(" , ,", id="only-separators"),
        pytest.param(ScopeSet([]), id="empty-scopeset"),
        pytest.param(["re*d"], id="star-inside-segment"),
        pytest.param(["read::orders"], id="empty-segment"),
        pytest.param([":orders"], id="leading-colon"),
        pytest.param(["read:"], id="trailing-colon"),
        pytest.param(["**:orders"], id="double-star-not-last"),
        pytest.param(["read:órders"], id="non-ascii"),
        pytest.param(["read:orders\u00a0write:refunds"], id="nbsp"),
        pytest.param("read:orders\twrite:refunds", id="tab"),
        pytest.param(["read:orders write:refunds"], id="space-inside-list-item"),
        pytest.param(["read:order?"], id="question-mark"),
        pytest.param(["read:[ab]"], id="brackets"),
        pytest.param(["read:orders", 7], id="non-string-item"),
        pytest.param(["x" * 201], id="too-long"),
        pytest.param([":".join(["a"] * 17)], id="too-many-segments"),
        pytest.param([f"s{i}" for i in range(257)], id="too-many-scopes"),
    ],
)
def test_bad_scopes_are_refused_before_anything_is_signed(issuer: Issuer, scopes: Any) -> None:
    with pytest.raises(InvalidScopeError) as info:
        issuer.issue(AGENT, scopes)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("scopes", "claim"),
    [
        pytest.param(["read:*"], "read:*", id="star"),
        pytest.param(["read:**"], "read:**", id="double-star"),
        pytest.param(["**"], "**", id="everything"),
        pytest.param(["*:orders"], "*:orders", id="star-first"),
        pytest.param("read:orders write:refunds", "read:orders write:refunds", id="spaces"),
        pytest.param("read:orders,write:refunds", "read:orders write:refunds", id="commas"),
        pytest.param(" read:orders , write:refunds ", "read:orders write:refunds", id="mixed"),
        pytest.param(("read:orders", "read:orders"), "read:orders", id="duplicates-dropped"),
        pytest.param(ScopeSet(["a.b-c_d:E9"]), "a.b-c_d:E9", id="scopeset"),
    ],
)
def test_good_scopes_become_one_space_separated_claim(
    issuer: Issuer, verifier: Verifier, scopes: Any, claim: str
) -> None:
    minted = issuer.issue(AGENT, scopes)
    assert minted.claims["scope"] == claim
    assert verifier.verify(minted.token).scopes.claim() == claim


def test_jti_is_unique_and_at_least_128_bits(issuer: Issuer) -> None:
    jtis = [issuer.issue(AGENT, "read:orders").claims["jti"] for _ in range(1000)]
    assert len(set(jtis)) == 1000
    for jti in jtis[:50]:
        assert len(jti) == 22  # secrets.token_urlsafe(16)
        assert len(base64.urlsafe_b64decode(jti + "==")) * 8 >= 128


@pytest.mark.parametrize(
    "agent",
    ["", " SupportBot", "SupportBot ", "Support\nBot", "Bot\t", "\x00", "x" * 257, 7, None],
    ids=repr,
)
def test_a_bad_agent_name_is_refused(issuer: Issuer, agent: Any) -> None:
    with pytest.raises(ConfigError):
        issuer.issue(agent, "read:orders")


@pytest.mark.parametrize(
    "agent",
    ["Bøt", "a b", "x" * 129, "-bot", "Supp\u043ertBot"],  # printable, but not an agent name
    ids=ascii,
)
def test_a_name_outside_the_agent_name_grammar_is_refused(issuer: Issuer, agent: str) -> None:
    with pytest.raises(ConfigError, match="1 to 128 ASCII letters"):
        issuer.issue(agent, "read:orders")


@pytest.mark.parametrize("agent", ["SupportBot", "support-bot@team", "svc:orders.v2", "x" * 128])
def test_agent_names_in_the_grammar_are_accepted(
    issuer: Issuer, verifier: Verifier, agent: str
) -> None:
    assert verifier.verify(issuer.issue(agent, "read:orders").token).subject == agent


@pytest.mark.parametrize("audience", ["", " svc", [], ["ok", ""], [1], "a\nb"], ids=repr)
def test_a_bad_audience_is_refused(issuer: Issuer, audience: Any) -> None:
    with pytest.raises(ConfigError):
        issuer.issue(AGENT, "read:orders", audience=audience)


def test_a_bad_issuer_name_is_refused(key_dir: KeyDirectory) -> None:
    with pytest.raises(ConfigError):
        Issuer(key_dir.signing_key(), issuer=" padded ")


def test_audience_default_and_override(key_dir: KeyDirectory) -> None:
    issuer = Issuer(key_dir.signing_key(), audience=["billing", "shipping"])
    assert issuer.issue(AGENT, "read:orders").claims["aud"] == ["billing", "shipping"]
    assert issuer.issue(AGENT, "read:orders", audience="audit").claims["aud"] == "audit"


def test_a_token_too_long_for_verifiers_is_refused(issuer: Issuer) -> None:
    many = [f"scope-{i:03}:" + "x" * 150 for i in range(100)]
    with pytest.raises(ConfigError) as info:
        issuer.issue(AGENT, many)
    assert info.value.expected == 8192 < info.value.found


def test_reprs_hold_no_token_and_no_key(issuer: Issuer) -> None:
    minted = issuer.issue(AGENT, "read:orders")
    head, body, signature = minted.token.split(".")
    pem = issuer.key.to_pem().decode("ascii")
    secret_line = pem.splitlines()[1]
    for text in (repr(minted), str(minted), repr(issuer), repr(issuer.key)):
        assert head not in text and body not in text and signature not in text
        assert secret_line not in text
    assert repr(minted) == f"IssuedToken(sub={AGENT!r}, jti={minted.claims['jti']!r})"
    assert isinstance(minted, IssuedToken)


def test_from_settings_uses_the_settings(key_dir: KeyDirectory) -> None:
    settings = Settings(
        keys_dir=key_dir.path, issuer="corp", audience="billing", ttl=120, max_ttl=600
    )
    issuer = Issuer.from_settings(settings)
    assert issuer.key.kid == key_dir.active().kid
    claims = issuer.issue(AGENT, "read:orders", now=1_800_000_000).claims
    assert (claims["iss"], claims["aud"], claims["exp"] - claims["iat"]) == ("corp", "billing", 120)
    with pytest.raises(ConfigError):
        issuer.issue(AGENT, "read:orders", ttl=601)


def test_from_settings_reads_the_environment_when_given_nothing(
    key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    monkeypatch.setenv("AGENTSUDO_ISSUER", "env-issuer")
    monkeypatch.setenv("AGENTSUDO_TTL", "5m")
    claims = Issuer.from_settings().issue(AGENT, "read:orders").claims
    assert claims["iss"] == "env-issuer" and claims["exp"] - claims["iat"] == 300


def test_from_settings_without_a_key_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Issuer.from_settings(Settings(keys_dir=tmp_path / "nowhere"))


def test_a_minted_token_verifies_with_defaults(issuer: Issuer, verifier: Verifier) -> None:
    minted = issuer.issue(AGENT, ["read:orders"])
    claims = verifier.verify(minted.token)
    assert claims.jti == minted.claims["jti"] and claims.subject == AGENT

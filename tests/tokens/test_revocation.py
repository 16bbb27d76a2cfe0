"""Revocation by jti and by agent (the kill switch), on SQLite and on a real Redis.

Every test runs on both backends. A verifier with a store refuses revoked
tokens, cached or not, in any process; without a store it stays offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest_store import Worker, free_port

from agentsudo_cli.main import cli
from agentsudo_tokens import (
    BadSignatureError,
    Issuer,
    JwksFile,
    KeyDirectory,
    PermissionDeniedError,
    RevokedTokenError,
    Settings,
    Verifier,
    sudo,
)
from agentsudo_tokens.errors import ConfigError, StoreUnavailableError
from agentsudo_tokens.state import STATE_FILE, Store, open_store
from agentsudo_tokens.tokens.revocation import (
    AGENT,
    check_token,
    revoke,
    revoke_agent,
    revoke_token,
)

AGENTSUDO = Path(sys.executable).parent / "agentsudo"


@pytest.fixture
def checked(key_dir: KeyDirectory, store: Store) -> Verifier:
    """A verifier that checks the store."""
    return Verifier(JwksFile(key_dir.jwks_path), store=store)


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, input=input, prog_name="agentsudo")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"agentsudo {args} raised {result.exception!r}")
    assert "Traceback" not in result.stdout + result.stderr
    return result


# -- by jti ----------------------------------------------------------------------------------


def test_a_revoked_jti_is_refused_cached_or_not(
    issuer: Issuer, checked: Verifier, store: Store
) -> None:
    minted = issuer.issue("SupportBot", "read:orders")
    claims = checked.verify(minted.token)  # cached from now on
    assert checked.verify(minted.token) is claims
    done = revoke(store, claims.jti, reason="leaked  in\na log", expires_at=claims.expires_at)
    assert done.kind == "token" and done.reason == "leaked in a log"
    assert done.kept_until == claims.expires_at + 300
    with pytest.raises(RevokedTokenError, match="was revoked") as refused:
        checked.verify(minted.token)
    assert refused.value.found == "revoked jti"
    assert minted.token not in str(refused.value)
    fresh = Verifier(checked.keys, store=store)
    with pytest.raises(RevokedTokenError):
        fresh.verify(minted.token)
    other = issuer.issue("SupportBot", "read:orders")
    assert checked.verify(other.token).jti == other.claims["jti"]  # others are untouched


def test_revoke_a_whole_token(issuer: Issuer, checked: Verifier, store: Store) -> None:
    minted = issuer.issue("SupportBot", "read:orders", ttl=600)
    done = revoke_token(store, minted.token)
    assert done.target == minted.claims["jti"]
    assert done.kept_until > minted.claims["exp"] + 300  # its exp is not verified: not trusted
    verified = revoke_token(store, minted.token, expires_at=minted.claims["exp"])
    assert verified.kept_until == minted.claims["exp"] + 300
    with pytest.raises(RevokedTokenError):
        checked.verify(minted.token)


def test_a_jti_alone_is_kept_while_any_token_naming_it_could_verify(store: Store) -> None:
    """Issued up to a leeway ahead, living max_ttl, accepted a leeway past exp: 2 x 300 s."""
    done = revoke(store, "some-jti", max_ttl=3600, now=1_000_000)
    assert done.kept_until == 1_000_000 + 3600 + 2 * 300
    known = revoke(store, "other-jti", expires_at=1_000_100, max_ttl=3600, now=1_000_000)
    assert known.kept_until == 1_000_100 + 300  # the token's own exp, plus the largest leeway
    with pytest.raises(ConfigError):
        revoke(store, "")


def test_revocation_needs_a_store_to_be_seen(
    issuer: Issuer, verifier: Verifier, store: Store
) -> None:
    """Without a store verification is offline: a revoked token works until it expires."""
    minted = issuer.issue("SupportBot", "read:orders")
    revoke_token(store, minted.token)
    assert verifier.store is None
    assert verifier.verify(minted.token).subject == "SupportBot"


def test_a_bad_token_is_refused_before_the_store_is_asked(
    issuer: Issuer, key_dir: KeyDirectory
) -> None:
    unreachable = open_store(f"redis://127.0.0.1:{free_port()}/0")
    verifier = Verifier(JwksFile(key_dir.jwks_path), store=unreachable)
    token = issuer.issue("SupportBot", "read:orders").token
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(BadSignatureError):
        verifier.verify(tampered)
    with pytest.raises(StoreUnavailableError):
        verifier.verify(token)  # a good token needs the store: fail closed


class _Surprising(Store):
    """A store whose every answer is an exception nobody planned for."""

    url = "surprising://"

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        raise RuntimeError("surprise")

    def put(self, key: str, value: str, *, expires_at: float) -> None:
        raise RuntimeError("surprise")

    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        raise RuntimeError("surprise")

    def take(self, key: str) -> str | None:
        raise RuntimeError("surprise")

    def items(self, prefix: str) -> dict[str, str]:
        raise RuntimeError("surprise")


def test_a_misbehaving_store_never_lets_a_token_through(
    issuer: Issuer, key_dir: KeyDirectory
) -> None:
    verifier = Verifier(JwksFile(key_dir.jwks_path), store=_Surprising())
    token = issuer.issue("SupportBot", "read:orders").token
    for _ in range(2):  # fresh, then cached
        with pytest.raises(StoreUnavailableError, match="unexpected RuntimeError"):
            verifier.verify(token)


# -- by agent: the kill switch ---------------------------------------------------------------


def test_revoke_agent_refuses_every_token_issued_until_now(
    issuer: Issuer, checked: Verifier, store: Store
) -> None:
    at = int(time.time()) - 100  # the switch was thrown 100 s ago
    earlier = issuer.issue("SupportBot", "read:orders", now=at - 60)
    same_second = issuer.issue("SupportBot", "read:orders", now=at)
    ahead = issuer.issue("SupportBot", "read:orders", now=at + 25)  # an issuer's clock ahead
    bystander = issuer.issue("AnalyticsBot", "read:orders", now=at - 60)
    checked.verify(earlier.token)
    done = revoke_agent(store, "SupportBot", reason="compromised", now=at)
    assert done.kind == "agent" and done.revoked_at == at and done.cutoff == at + 30
    assert done.kept_until == at + 30 + Settings().max_ttl + 300
    for minted in (earlier, same_second, ahead):
        with pytest.raises(RevokedTokenError, match="every token of agent 'SupportBot'") as err:
            checked.verify(minted.token)
        assert re.search(r"until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(err.value))
        assert str(at) not in str(err.value)  # ISO 8601 times, not raw epochs
    assert checked.verify(bystander.token).subject == "AnalyticsBot"
    later = issuer.issue("SupportBot", "read:orders", now=at + 31)  # after the cut-off
    assert checked.verify(later.token).subject == "SupportBot"


def test_an_unreadable_agent_entry_revokes(issuer: Issuer, checked: Verifier, store: Store) -> None:
    store.put(AGENT + "SupportBot", "garbage", expires_at=time.time() + 60)
    with pytest.raises(RevokedTokenError):
        checked.verify(issuer.issue("SupportBot", "read:orders").token)


def test_check_token_reads_once(issuer: Issuer, checked: Verifier, store: Store) -> None:
    calls: list[int] = []
    real = store.get_many

    def counting(keys: Sequence[str]) -> list[str | None]:
        calls.append(len(keys))
        return real(keys)

    store.get_many = counting  # type: ignore[method-assign]
    claims = checked.verify(issuer.issue("SupportBot", "read:orders").token)
    check_token(store, claims)
    assert calls == [3, 3]  # jti, agent and one-time mark in one round trip


# -- the ambient agent and the default verifier ----------------------------------------------


def test_the_default_verifier_uses_agentsudo_store(
    monkeypatch: pytest.MonkeyPatch, key_dir: KeyDirectory, issuer: Issuer, store_url: str
) -> None:
    minted = issuer.issue("SupportBot", "read:orders")
    with open_store(store_url) as store:
        revoke_token(store, minted.token)
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    monkeypatch.setenv("AGENTSUDO_STORE", store_url)
    assert Verifier.from_settings().store is not None
    monkeypatch.setenv("AGENTSUDO_TOKEN", minted.token)

    @sudo(scope="read:orders")
    def read_orders() -> str:
        return "orders"

    with pytest.raises(PermissionDeniedError, match="AGENTSUDO_TOKEN was refused: .*revoked"):
        read_orders()


def test_the_default_verifier_reads_the_state_file_whenever_it_exists(
    monkeypatch: pytest.MonkeyPatch, key_dir: KeyDirectory
) -> None:
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    default = Verifier.from_settings()
    assert default.store is not None and default.revocation_recheck > 0
    assert not (key_dir.path / STATE_FILE).exists()  # a reader creates nothing
    assert Verifier.from_settings(store=None).store is None


# -- the command line ------------------------------------------------------------------------


def test_cli_revoke_then_verify(key_dir: KeyDirectory, issuer: Issuer, store_url: str) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path), "AGENTSUDO_STORE": store_url}
    minted = issuer.issue("SupportBot", "read:orders")
    jti = minted.claims["jti"]
    assert run_cli("verify", minted.token, env=env).exit_code == 0
    done = run_cli("revoke", jti, "--reason", "leaked", "--json", env=env)
    assert done.exit_code == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["ok"] and payload["revoked"] == "token" and payload["target"] == jti
    assert payload["reason"] == "leaked"
    refused = run_cli("verify", minted.token, env=env)
    assert refused.exit_code == 1
    assert "was revoked" in refused.stderr and minted.token not in refused.stderr


def test_cli_revoke_token_from_stdin_and_agent(
    key_dir: KeyDirectory, issuer: Issuer, store_url: str
) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    minted = issuer.issue("SupportBot", "read:orders")
    analytics = issuer.issue("AnalyticsBot", "read:orders")  # before the kill switch
    done = run_cli("revoke", "-", "--store", store_url, env=env, input=minted.token + "\n")
    assert done.exit_code == 0 and done.stdout.startswith("revoked: token ")
    killed = run_cli("revoke", "--agent", "AnalyticsBot", "--store", store_url, env=env)
    assert killed.exit_code == 0
    assert "every token of agent 'AnalyticsBot' issued until" in killed.stdout
    with open_store(store_url) as store:
        verifier = Verifier(JwksFile(key_dir.jwks_path), store=store)
        with pytest.raises(RevokedTokenError):
            verifier.verify(minted.token)
        with pytest.raises(RevokedTokenError):
            verifier.verify(analytics.token)


def test_cli_revoke_uses_the_key_directory_file_by_default(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    minted = issuer.issue("SupportBot", "read:orders")
    assert run_cli("revoke", minted.token, env=env).exit_code == 0
    assert (key_dir.path / STATE_FILE).exists()
    refused = run_cli("verify", minted.token, env=env)  # no AGENTSUDO_STORE: the file is found
    assert refused.exit_code == 1 and "revoked" in refused.stderr


@pytest.mark.parametrize("args", [(), ("abc", "--agent", "Bot")], ids=["neither", "both"])
def test_cli_revoke_needs_one_target(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli("revoke", *args, env={"AGENTSUDO_KEYS_DIR": str(tmp_path)})
    assert result.exit_code == 2 and "JTI_OR_TOKEN or --agent" in result.stderr


def test_cli_revoke_a_jti_that_starts_with_a_dash(
    key_dir: KeyDirectory, store: Store, store_url: str
) -> None:
    """token_urlsafe may start a jti with "-" and hold an "h": still a jti, never -h (help)."""
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    done = run_cli("revoke", "-2xYz_abcdefghijklmnoph", "--store", store_url, env=env)
    assert done.exit_code == 0, done.stderr
    assert store.get("revoked:-2xYz_abcdefghijklmnoph") is not None
    typo = run_cli("revoke", "--reasn", env=env)
    assert typo.exit_code == 2 and "no such option: --reasn" in typo.stderr


def test_cli_revoke_with_the_store_down_fails(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli("revoke", "a" * 22, "--store", url, env={"AGENTSUDO_KEYS_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert result.stderr.startswith("agentsudo: state store redis://127.0.0.1:")
    assert "unavailable" in result.stderr


# -- across processes ------------------------------------------------------------------------


@pytest.fixture
def worker(key_dir: KeyDirectory, store_url: str) -> Iterator[Worker]:
    started = Worker("verifier", store_url, str(key_dir.jwks_path))
    assert started.read() == "started"
    yield started
    started.close()


def _agentsudo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")} | env
    return subprocess.run(
        [str(AGENTSUDO), *args], env=full, capture_output=True, text=True, timeout=30
    )


def test_revocation_reaches_a_running_verifier_in_another_process(
    worker: Worker, key_dir: KeyDirectory, issuer: Issuer, store_url: str
) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path), "AGENTSUDO_STORE": store_url}
    token = issuer.issue("SupportBot", "read:orders").token
    bystander = issuer.issue("AnalyticsBot", "read:orders").token
    assert worker.ask(f"verify {token}").startswith("ok ")  # verified, and cached there
    assert worker.ask(f"verify {bystander}").startswith("ok ")
    done = _agentsudo("revoke", token, env=env)  # a third process: the real command
    assert done.returncode == 0, done.stderr
    assert worker.ask(f"verify {token}").startswith("err RevokedTokenError")
    assert worker.ask(f"verify {bystander}").startswith("ok ")
    killed = _agentsudo("revoke", "--agent", "AnalyticsBot", env=env)
    assert killed.returncode == 0, killed.stderr
    assert worker.ask(f"verify {bystander}").startswith("err RevokedTokenError")


@pytest.mark.parametrize(
    "target",
    [
        "garbage",  # a word: too short to be a jti
        "x" * 15,
        "has space in it, long enough",
        "é" * 20,
        "a.b",  # looks like a token, decodes to nothing
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA",  # a token without a jti
        "\x1b[2Jclear-the-screen-please",
    ],
    ids=["word", "short", "space", "non-ascii", "not-a-token", "no-jti", "escape"],
)
def test_cli_revoke_refuses_what_is_neither_a_token_nor_a_jti(
    key_dir: KeyDirectory, target: str
) -> None:
    """`agentsudo revoke garbage` is a usage error (exit 2), and records nothing."""
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    done = run_cli("revoke", target, env=env)
    assert done.exit_code == 2, done.stdout + done.stderr
    assert "revoked" not in done.stdout
    assert "\x1b" not in done.stderr
    assert not (key_dir.path / STATE_FILE).exists()  # nothing was written


def test_cli_revoke_agent_refuses_a_name_outside_the_grammar(key_dir: KeyDirectory) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    done = run_cli("revoke", "--agent", "Bot\nrevoked: everything", env=env)
    assert done.exit_code == 2 and "revoked:" not in done.stdout
    assert not (key_dir.path / STATE_FILE).exists()


def test_cli_revoke_agent_reports_the_cutoff_in_iso_8601(key_dir: KeyDirectory) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    done = run_cli("revoke", "--agent", "SupportBot", env=env)
    assert done.exit_code == 0, done.stderr
    assert re.search(r"issued until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", done.stdout)


def test_a_rechecking_verifier_reuses_not_revoked_for_a_moment_only(
    key_dir: KeyDirectory, issuer: Issuer, store: Store
) -> None:
    """revocation_recheck: the cache answers for that long, unless this process wrote."""
    clock = [float(int(time.time()))]  # the store expires entries on the real clock
    verifier = Verifier(
        JwksFile(key_dir.jwks_path), store=store, revocation_recheck=1.0, clock=lambda: clock[0]
    )
    minted = issuer.issue("SupportBot", "read:orders", now=clock[0])
    assert verifier.needs_store(minted.token)  # never seen
    verifier.verify(minted.token)
    assert not verifier.needs_store(minted.token)  # answered a moment ago
    clock[0] += 1.0
    assert verifier.needs_store(minted.token)  # the moment is over
    verifier.verify(minted.token)
    revoke_agent(store, "OtherBot")  # any write through this process's store
    assert verifier.needs_store(minted.token)
    revoke(store, minted.claims["jti"])
    with pytest.raises(RevokedTokenError):
        verifier.verify(minted.token)  # seen at once: no waiting out the moment
    once = issuer.issue("DeployBot", "deploy:prod", now=clock[0], once=True)
    verifier.verify(once.token)
    assert verifier.needs_store(once.token)  # a one-time token always asks
    with pytest.raises(RevokedTokenError, match="already used"):
        verifier.verify(once.token)


def test_revoke_token_does_not_trust_an_unverified_exp(store: Store, issuer: Issuer) -> None:
    """A copy of a token with exp edited into the past must not make the entry expire at once."""
    import base64

    minted = issuer.issue("SupportBot", "read:orders")
    head, payload, signature = minted.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = 1_000_000  # 1970
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    done = revoke_token(store, f"{head}.{edited}.{signature}")
    assert done.kept_until > time.time() + Settings().max_ttl  # as long as for a jti alone


def test_cli_revoke_keeps_an_edited_token_revoked(key_dir: KeyDirectory, issuer: Issuer) -> None:
    import base64

    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    minted = issuer.issue("SupportBot", "read:orders")
    head, payload, signature = minted.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = 1_000_000
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    done = run_cli("revoke", f"{head}.{edited}.{signature}", env=env)
    assert done.exit_code == 0 and "does not verify here" in done.stderr
    refused = run_cli("verify", minted.token, env=env)
    assert refused.exit_code == 1 and "was revoked" in refused.stderr
    genuine = issuer.issue("SupportBot", "read:orders")
    ok = run_cli("revoke", genuine.token, "--json", env=env)
    assert ok.exit_code == 0 and ok.stderr == ""
    assert json.loads(ok.stdout)["kept_until"] == genuine.claims["exp"] + 300  # verified exp


def test_cli_revoke_refuses_a_token_cut_at_its_first_dot(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    minted = issuer.issue("SupportBot", "read:orders")
    done = run_cli("revoke", minted.token.split(".")[0], env=env)
    assert done.exit_code == 2 and "first part of a token" in done.stderr
    assert not (key_dir.path / STATE_FILE).exists()


def test_cli_revoke_a_jti_that_starts_with_two_dashes(
    key_dir: KeyDirectory, store: Store, store_url: str
) -> None:
    """token_urlsafe starts about one jti in 4,096 with "--": it must still be revocable."""
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    done = run_cli("revoke", "--AAAAAAAAAAAAAAAAAAAA", "--store", store_url, env=env)
    assert done.exit_code == 0, done.stderr
    assert store.get("revoked:--AAAAAAAAAAAAAAAAAAAA") is not None

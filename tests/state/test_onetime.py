"""One-time tokens: the first successful verification consumes the jti, atomically.

The race runs 8 verifier processes against one token, many rounds, on SQLite
and on a real Redis: every round has exactly one winner.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from conftest_store import Worker, free_port

from agentsudo_cli.main import cli
from agentsudo_tokens import (
    Issuer,
    JwksFile,
    KeyDirectory,
    RevokedTokenError,
    Verifier,
    WrongAudienceError,
)
from agentsudo_tokens.errors import (
    MalformedTokenError,
    StateRequiredError,
    StoreUnavailableError,
)
from agentsudo_tokens.state import STATE_FILE, Store, open_store
from agentsudo_tokens.state.onetime import USED, mark_one_time
from agentsudo_tokens.tokens.issuer import issue_once
from agentsudo_tokens.tokens.revocation import revoke

PROCESSES = 8
ROUNDS = 60


@pytest.fixture
def checked(key_dir: KeyDirectory, store: Store) -> Verifier:
    return Verifier(JwksFile(key_dir.jwks_path), store=store)


def test_the_first_verification_consumes(issuer: Issuer, checked: Verifier, store: Store) -> None:
    minted = issue_once(issuer, store, "DeployBot", "deploy:prod", ttl=120)
    assert checked.verify(minted.token).subject == "DeployBot"
    with pytest.raises(RevokedTokenError, match="already used") as again:
        checked.verify(minted.token)  # the cached result is no second pass
    assert again.value.found == "used one-time token"
    with pytest.raises(RevokedTokenError, match="already used"):
        Verifier(checked.keys, store=store).verify(minted.token)


def test_an_ordinary_token_verifies_again_and_again(issuer: Issuer, checked: Verifier) -> None:
    token = issuer.issue("DeployBot", "deploy:prod").token
    for _ in range(3):
        assert checked.verify(token).subject == "DeployBot"


def test_a_refused_token_consumes_nothing(issuer: Issuer, checked: Verifier, store: Store) -> None:
    minted = issue_once(issuer, store, "DeployBot", "deploy:prod", audience="deploy")
    with pytest.raises(WrongAudienceError):
        checked.verify(minted.token)  # not for this audience: no use made of it
    assert store.get(USED + minted.claims["jti"]) is None
    assert checked.verify(minted.token, audience="deploy").subject == "DeployBot"

    revoked = issue_once(issuer, store, "DeployBot", "deploy:prod")
    revoke(store, revoked.claims["jti"])
    with pytest.raises(RevokedTokenError, match="was revoked"):
        checked.verify(revoked.token)
    assert store.get(USED + revoked.claims["jti"]) is None


def test_a_verifier_without_a_store_refuses_a_one_time_token(
    issuer: Issuer, verifier: Verifier, store: Store
) -> None:
    """The token says it is single-use: a verifier that cannot record its use refuses it."""
    minted = issue_once(issuer, store, "DeployBot", "deploy:prod")
    assert minted.claims["once"] is True
    assert verifier.store is None
    for _ in range(3):  # not once, and not after a cache hit either
        with pytest.raises(StateRequiredError, match="single-use and this verifier has no state"):
            verifier.verify(minted.token)
    plain = issuer.issue("DeployBot", "deploy:prod")
    assert verifier.verify(plain.token).subject == "DeployBot"  # other tokens are unaffected


def test_the_default_verifier_with_no_state_file_yet_consumes_a_one_time_token(
    monkeypatch: pytest.MonkeyPatch, issuer: Issuer, key_dir: KeyDirectory
) -> None:
    """No AGENTSUDO_STORE and no state file yet: the first use creates it, the second fails."""
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    minted = issuer.issue("DeployBot", "deploy:prod", once=True)  # marked only in the token
    default = Verifier.from_settings()
    assert not (key_dir.path / STATE_FILE).exists()
    assert default.verify(minted.token).subject == "DeployBot"
    with pytest.raises(RevokedTokenError, match="already used"):
        default.verify(minted.token)
    with pytest.raises(RevokedTokenError, match="already used"):
        Verifier.from_settings().verify(minted.token)


@pytest.mark.parametrize("value", [False, 1, "true", None, [True]])
def test_a_once_claim_other_than_true_is_malformed(
    key_dir: KeyDirectory, verifier: Verifier, value: object
) -> None:
    from agentsudo_tokens.tokens.jws import encode

    signing = key_dir.signing_key()
    now = int(time.time())
    claims = {
        "iss": "agentsudo", "sub": "DeployBot", "aud": "agentsudo", "iat": now, "nbf": now,
        "exp": now + 60, "jti": "j" * 22, "scope": "deploy:prod", "once": value,
    }  # fmt: skip
    token = encode({"alg": "EdDSA", "typ": "at+jwt", "kid": signing.kid}, claims, signing)
    with pytest.raises(MalformedTokenError, match="claim 'once'"):
        verifier.verify(token)


def test_mark_needs_jti_and_exp(store: Store) -> None:
    from agentsudo_tokens.errors import ConfigError

    with pytest.raises(ConfigError):
        mark_one_time(store, {"jti": "x"})


def test_no_one_time_token_without_a_store(issuer: Issuer) -> None:
    down = open_store(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailableError):
        issue_once(issuer, down, "DeployBot", "deploy:prod")


def _race_in_threads(verifier: Verifier, token: str, threads: int) -> list[str]:
    outcomes: list[str] = []
    barrier = threading.Barrier(threads)

    def use() -> None:
        barrier.wait()
        try:
            verifier.verify(token)
            outcomes.append("ok")
        except RevokedTokenError:
            outcomes.append("refused")

    started = [threading.Thread(target=use) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return outcomes


def test_threads_sharing_one_verifier_have_one_winner(
    issuer: Issuer, checked: Verifier, store: Store
) -> None:
    for _ in range(5):
        token = issue_once(issuer, store, "DeployBot", "deploy:prod").token
        assert sorted(_race_in_threads(checked, token, 8)) == ["ok"] + ["refused"] * 7


# -- the command line ------------------------------------------------------------------------


def test_cli_issue_once(key_dir: KeyDirectory, store_url: str) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path), "AGENTSUDO_STORE": store_url}
    runner = CliRunner()
    issued = runner.invoke(
        cli, ["issue", "--agent", "DeployBot", "--scopes", "deploy:prod", "--once"], env=env
    )
    assert issued.exit_code == 0, issued.stderr
    token = issued.stdout.strip()
    first = runner.invoke(cli, ["verify", token], env=env)
    assert first.exit_code == 0, first.stderr
    second = runner.invoke(cli, ["verify", token], env=env)
    assert second.exit_code == 1 and "already used" in second.stderr
    as_json = runner.invoke(
        cli, ["issue", "--agent", "D", "--scopes", "a:b", "--once", "--json"], env=env
    )
    assert json.loads(as_json.stdout)["once"] is True


def test_cli_issue_once_prints_no_token_when_the_store_is_down(key_dir: KeyDirectory) -> None:
    env = {"AGENTSUDO_KEYS_DIR": str(key_dir.path)}
    args = ["issue", "--agent", "DeployBot", "--scopes", "deploy:prod", "--once"]
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(cli, [*args, "--store", url], env=env)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "unavailable" in result.stderr


# -- the race: 8 processes, many rounds ------------------------------------------------------


@pytest.fixture
def workers(key_dir: KeyDirectory, store_url: str) -> Iterator[list[Worker]]:
    started = [Worker("verifier", store_url, str(key_dir.jwks_path)) for _ in range(PROCESSES)]
    try:
        for worker in started:
            assert worker.read() == "started"
        yield started
    finally:
        for worker in started:
            worker.close()


def test_processes_racing_for_one_token_have_exactly_one_winner(
    workers: list[Worker], issuer: Issuer, store: Store
) -> None:
    wins_by_worker = [0] * PROCESSES
    for _ in range(ROUNDS):
        minted = issue_once(issuer, store, "DeployBot", "deploy:prod", ttl=60)
        for worker in workers:
            worker.send(f"prepare {minted.token}")
        assert all(worker.read() == "ready" for worker in workers)
        start = time.time() + 0.02
        for worker in workers:  # released together, at one instant
            worker.send(f"go {start}")
        outcomes = [worker.read() for worker in workers]
        winners = [i for i, outcome in enumerate(outcomes) if outcome.startswith("ok ")]
        assert len(winners) == 1, outcomes
        losers = [o for o in outcomes if not o.startswith("ok ")]
        assert all(o.startswith("err RevokedTokenError") for o in losers), losers
        wins_by_worker[winners[0]] += 1
    assert sum(wins_by_worker) == ROUNDS
    assert sum(1 for wins in wins_by_worker if wins) >= 2  # a real race: not always one worker

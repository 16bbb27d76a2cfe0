"""``agentsudo budget show TOKEN_OR_JTI`` after real spends through ``@sudo``, on both stores.

The guard and the command find the same store: ``AGENTSUDO_STORE`` (a fresh SQLite
file, or a real redis-server), or by default the key directory's SQLite file. A
token shows every budget it carries; a jti, what the store holds for it; anything
else is one line and exit 2, never a traceback.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import agentsudo, b64, invoke, issue, one_line

from agentsudo_tokens import Agent, JwksFile, KeyDirectory, Verifier, sudo
from agentsudo_tokens.errors import BudgetExhaustedError
from agentsudo_tokens.guard.budget import reset_default_ledger
from agentsudo_tokens.state import open_store
from agentsudo_tokens.tokens.verifier import decode_unverified

BUDGETED = (
    "--agent", "SupportBot", "--scopes", "read:orders write:refunds",
    "--limit", "write:refunds amount<=100",
    "--budget", "write:refunds amount=500 calls=20",
    "--budget", "read:orders calls=5",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_ledger() -> Iterator[None]:
    reset_default_ledger()
    yield
    reset_default_ledger()


@pytest.fixture
def shared(here: KeyDirectory, store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AGENTSUDO_STORE`` for the guard and the command alike; the URL the command shows."""
    monkeypatch.setenv("AGENTSUDO_STORE", store_url)
    with open_store(store_url) as store:
        return store.url


@sudo(scope="write:refunds")
def refund(order_id: str, amount: Any) -> None:
    """A refund: its amount is debited from the token's budget."""


def spend(token: str, key_dir: KeyDirectory, *amounts: Any) -> None:
    """Run ``refund`` once per amount as the token's agent (the ledger: the settings' store)."""
    agent = Agent.from_token(token, verifier=Verifier(JwksFile(key_dir.jwks_path)))
    with agent.start_session():
        for amount in amounts:
            refund("o", amount)


def jti_of(token: str) -> str:
    return str(decode_unverified(token).claims["jti"])


def test_a_token_shows_every_budget_after_spends(here: KeyDirectory, shared: str) -> None:
    token = issue(*BUDGETED)
    spend(token, here, 50, 0.5)
    done = invoke("budget", "show", token)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"jti {jti_of(token)} (store {shared}):",
        "  write:refunds (entry 0): amount 449.5 of 500 left, 18 of 20 calls left",
        "  read:orders (entry 1): 5 of 5 calls left",
    ]
    assert done.stderr == ""


def test_a_jti_shows_what_the_store_holds(here: KeyDirectory, shared: str) -> None:
    token = issue(*BUDGETED)
    jti = jti_of(token)
    untouched = invoke("budget", "show", jti)
    assert untouched.exit_code == 0
    assert one_line(untouched.stdout) == f"jti {jti}: nothing spent is recorded (store {shared})"
    spend(token, here, 100, 100, 0.000001)
    done = invoke("budget", "show", jti)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"jti {jti} (store {shared}):",
        "  entry 0: amount 299.999999 of 500 left, 17 of 20 calls left",
    ]


def test_json_after_spends_until_exhausted(here: KeyDirectory, shared: str) -> None:
    token = issue(*BUDGETED)
    spend(token, here, *[100] * 5)
    with pytest.raises(BudgetExhaustedError):
        spend(token, here, 0.01)
    done = invoke("budget", "show", token, "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(one_line(done.stdout)) == {
        "ok": True,
        "jti": jti_of(token),
        "store": shared,
        "budgets": [
            {
                "entry": "0",
                "scope": "write:refunds",
                "counters": {
                    "amount": {"limit": "500", "spent": "500", "left": "0"},
                    "calls": {"limit": "20", "spent": "5", "left": "15"},
                },
            },
            {
                "entry": "1",
                "scope": "read:orders",
                "counters": {"calls": {"limit": "5", "spent": "0", "left": "5"}},
            },
        ],
    }
    by_jti = json.loads(one_line(invoke("budget", "show", jti_of(token), "--json").stdout))
    assert [(row["entry"], row["scope"]) for row in by_jti["budgets"]] == [("0", None)]
    assert by_jti["budgets"][0]["counters"]["calls"]["spent"] == "5"


@pytest.mark.parametrize(
    "extra",
    [(), ("--limit", "write:refunds amount<=100")],
    ids=["no-limits", "limits-without-budgets"],
)
def test_a_token_without_budgets_says_so(
    here: KeyDirectory, shared: str, extra: tuple[str, ...]
) -> None:
    token = issue("--agent", "SupportBot", "--scopes", "write:refunds", *extra)
    done = invoke("budget", "show", token)
    assert done.exit_code == 0, done.stderr
    assert (
        one_line(done.stdout) == f"jti {jti_of(token)}: the token has no budgets (store {shared})"
    )
    shown = json.loads(one_line(invoke("budget", "show", token, "--json").stdout))
    assert (shown["ok"], shown["budgets"]) == (True, [])


def _crafted(jti: object) -> str:
    """A token-shaped text carrying ``jti`` (its signature is never checked: this only reports)."""
    header = b64({"alg": "EdDSA", "typ": "at+jwt"})
    return f"{header}.{b64({'sub': 'x', 'jti': jti})}.{base64.urlsafe_b64encode(b'sig').decode()}"


HOSTILE = {
    "three-bad-parts": "a.b.c",
    "two-dots-empty": "a..b",
    "no-jti": _crafted(None),
    "jti-a-number": _crafted(7),
    "jti-with-colon": _crafted("aaaaaaaa:bbbbbbbbbb"),
    "jti-not-ascii": _crafted("é" * 20),
    "jti-control": _crafted("abc\x1b[2Jdefghijklmnop"),
    "bare-with-colon": "aaaaaaaa:bbbbbbbbbb",
    "bare-short": "abc",
    "bare-escape": "abcdefghijklmnop\x1b[31m",
    "first-part-only": "eyJhbGciOiJFZERTQSJ9",
    "too-long": "A" * 300,
}


@pytest.mark.parametrize("target", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_malformed_token_or_jti_is_one_line_and_exit_2(here: KeyDirectory, target: str) -> None:
    done = invoke("budget", "show", target)
    assert done.exit_code == 2, done.output
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert line.startswith("agentsudo: ") and "\x1b" not in line
    refused = invoke("budget", "show", target, "--json")
    assert refused.exit_code == 2
    answer = json.loads(one_line(refused.stdout))
    assert answer["ok"] is False and "\x1b" not in answer["message"]


def test_the_store_unreachable_is_one_line_naming_it(
    here: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest_store import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("AGENTSUDO_STORE", url)
    done = invoke("budget", "show", issue(*BUDGETED))
    assert done.exit_code == 2 and done.stdout == ""
    assert one_line(done.stderr).startswith(f"agentsudo: state store {url} is unavailable")


def test_the_installed_script_reads_the_default_store(here: KeyDirectory, tmp_path: Path) -> None:
    token = issue(*BUDGETED)
    spend(token, here, 12.5)
    done = agentsudo(["budget", "show", token], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "  write:refunds (entry 0): amount 487.5 of 500 left, 19 of 20 calls left",
        "  read:orders (entry 1): 5 of 5 calls left",
    ]
    assert "(store sqlite:///keys/agentsudo-state.db)" in done.stdout.splitlines()[0]
    bad = agentsudo(["budget", "show", "a.b.c"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert one_line(bad.stderr).startswith("agentsudo: ")


@pytest.mark.parametrize("jti", ["-h8Rp6L_Ya-l5PxanBSTP7Q", "--8Rp6L_Ya-l5PxanBSTP7Q"])
def test_a_jti_starting_with_a_dash_is_the_jti_not_an_option(shared: str, jti: str) -> None:
    """One jti in 64 starts with "-" (base64url); seen in CI as "No such option '-8'"."""
    import time

    from agentsudo_tokens.state.budgets import Budgets

    with open_store(shared) as store:
        Budgets(store).spend(jti, "0", {"calls": 1}, {"calls": 20}, expires_at=time.time() + 60)
    for args in (("budget", "show", jti), ("budget", "show", jti, "--json")):
        done = invoke(*args)
        assert done.exit_code == 0, done.output
        assert jti in done.stdout
        assert "19 of 20 calls left" in done.stdout or '"left": "19"' in done.stdout

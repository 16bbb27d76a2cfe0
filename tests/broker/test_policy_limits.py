"""The policy's limits and budgets (issue 11 part 4): per agent, carried by every token.

``limits`` and ``budgets`` take the grammar of ``--limit`` and ``--budget``; a
bad line is one line naming the file, the line, the agent's key and the reason.
``Policy.grant`` puts the policy's entries that may apply to the granted scopes
in the grant, then a caller's narrower ones; a looser bound or a bigger budget
than the policy's is refused. A real broker mints them into its tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker, init_keys
from installed_cli import sh

from agentsudo_tokens import KeySet, Verifier
from agentsudo_tokens.broker.policy import Caller, PolicyError, PolicyRefusal, parse_policy
from agentsudo_tokens.errors import InvalidLimitError, LimitExceededError, PermissionDeniedError
from agentsudo_tokens.tokens.limits import Limits

ME = os.getuid()
BASE = f"""[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
callers = ["uid:{ME}"]
"""
LIMITED = BASE + (
    'limits = ["write:refunds amount<=100 currency in USD,EUR"]\n'
    'budgets = ["write:refunds amount=500 calls=20"]\n'
)
CALLER = Caller(uid=ME, gids=frozenset(), credential=None)


def test_the_policy_reads_limits_and_budgets() -> None:
    rules = parse_policy(LIMITED).agents["SupportBot"]
    assert rules.limits == ("write:refunds amount<=100 currency in USD,EUR",)
    limits = rules.limits_of()
    assert limits is not None and len(limits) == 1
    (entry,) = limits
    assert entry.text() == "write:refunds amount<=100 currency in USD,EUR"
    assert entry.budget is not None and entry.budget.text() == "amount=500 calls=20"
    assert parse_policy(BASE).agents["SupportBot"].limits_of() is None


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('limits = ["write:refunds amount<<100"]', "limits[0]", "expected"),
        ('limits = ["write:refunds"]', "limits[0]", "expected constraints"),
        ('limits = ["read:orders n<=1", "write:refunds amount<=x"]', "limits[1]", "a number"),
        ('limits = ["delete:all n<=1"]', "limits[0]", "a scope the agent may be granted"),
        ('limits = "write:refunds amount<=1"', "limits", "expected an array"),
        ("limits = [1]", "limits[0]", "expected lines"),
        ('budgets = ["write:refunds amount=-5"]', "budgets[0]", "from 0 to"),
        ('budgets = ["write:refunds calls=1.5"]', "budgets[0]", "calls=N"),
        (
            'budgets = ["write:refunds amount=5", "write:refunds calls=2"]',
            "budgets[1]",
            "one budget",
        ),
        ('budgets = ["admin:x calls=2"]', "budgets[0]", "a scope the agent may be granted"),
    ],
)
def test_a_bad_line_names_the_file_line_agent_and_reason(line: str, key: str, words: str) -> None:
    with pytest.raises(PolicyError) as bad:
        parse_policy(BASE + line + "\n", source="agentsudo.toml")
    assert bad.value.line == 7
    assert bad.value.key == f"agents.SupportBot.{key}"
    assert words in str(bad.value), str(bad.value)
    assert "\n" not in str(bad.value)


def test_policy_check_reports_a_bad_limit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + 'limits = ["write:refunds amount<=100", "write:refunds cur in A,,B"]\n')
    bad.chmod(0o600)
    done = sh("policy", "check", str(bad), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"agentsudo: {bad}:7: agents.SupportBot.limits[1]: limit ")
    assert "single commas" in done.stderr and done.stderr.count("\n") == 1
    good = tmp_path / "good.toml"
    good.write_text(LIMITED)
    good.chmod(0o600)
    assert sh("policy", "check", str(good), cwd=tmp_path).returncode == 0


def _grant(policy_text: str, scopes: list[str] | None = None, asked: Limits | None = None):
    policy = parse_policy(policy_text)
    return policy.grant(CALLER, "SupportBot", scopes=scopes, ttl=None, audience=None, limits=asked)


def test_a_grant_carries_the_entries_that_may_apply() -> None:
    grant = _grant(LIMITED)
    assert grant.limits is not None and [e.scope for e in grant.limits] == ["write:refunds"]
    assert _grant(LIMITED, ["read:orders"]).limits is None  # none could apply: left out
    assert _grant(BASE).limits is None


def test_a_caller_adds_narrower_limits() -> None:
    asked = Limits.parse(
        ["write:refunds amount<=50 reason in dup,late"], budgets=["write:refunds calls=5"]
    )
    grant = _grant(LIMITED, asked=asked)
    assert grant.limits is not None and len(grant.limits) == 2
    grant.limits.check("write:refunds", {"amount": 50, "currency": "USD", "reason": "dup"})
    with pytest.raises(LimitExceededError, match="amount 60 exceeds the token's limit 50"):
        grant.limits.check("write:refunds", {"amount": 60, "currency": "USD", "reason": "dup"})
    # the policy's own still applies: both entries hold
    with pytest.raises(LimitExceededError, match="currency 'GBP'"):
        grant.limits.check("write:refunds", {"amount": 5, "currency": "GBP", "reason": "dup"})
    # a caller may add limits where the policy has none
    assert _grant(BASE, asked=Limits.parse(["read:orders n<=3"])).limits is not None


@pytest.mark.parametrize(
    ("limits", "budgets", "words"),
    [
        (["write:refunds amount<=500"], [], "amount<=500 is looser than its policy's"),
        (["write:refunds amount<101"], [], "looser"),
        (["write:refunds currency in USD,GBP"], [], "looser"),
        (["write:* amount<=1000"], [], "looser"),
        (
            [],
            ["write:refunds amount=501"],
            "amount 501 exceeds its policy's write:refunds amount 500",
        ),
        ([], ["write:refunds calls=21"], "calls 21 exceeds"),
        (["admin:x n<=1"], [], "applies to none of the token's scopes"),
    ],
)
def test_a_looser_ask_is_refused(limits: list[str], budgets: list[str], words: str) -> None:
    with pytest.raises(PolicyRefusal) as refused:
        _grant(LIMITED, asked=Limits.parse(limits, budgets=budgets))
    assert refused.value.reason.value == "limits"
    assert words in str(refused.value), str(refused.value)


def test_equal_bounds_and_other_kinds_are_within() -> None:
    asked = Limits.parse(
        ["write:refunds amount<=100 amount>=1 currency=EUR amount<100"],
        budgets=["write:refunds amount=500 calls=20"],
    )
    assert _grant(LIMITED, asked=asked).limits is not None
    with pytest.raises(PolicyRefusal):  # lt 100.5 admits 100.2, above le 100
        _grant(LIMITED, asked=Limits.parse(["write:refunds amount<100.5"]))


# -- a real broker -----------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path)
    running = Broker(tmp_path, LIMITED)
    yield running
    running.stop()


def _claims(broker: Broker, token: str):
    return Verifier(KeySet.from_dict(broker.client.jwks()), audience="agentsudo").verify(token)


def test_the_broker_mints_the_policy_limits(broker: Broker) -> None:
    answer = broker.client.issue("SupportBot")
    claims = _claims(broker, answer["token"])
    assert claims.limits is not None
    assert [e.text() for e in claims.limits] == ["write:refunds amount<=100 currency in USD,EUR"]
    assert answer["authorization_details"] == claims.limits.claim()
    with pytest.raises(LimitExceededError, match="amount 5000 exceeds the token's limit 100"):
        claims.limits.check("write:refunds", {"amount": 5000, "currency": "USD"})
    only_read = _claims(broker, broker.client.issue("SupportBot", scopes=["read:orders"])["token"])
    assert only_read.limits is None
    # and a fresh token has a fresh budget: each one carries the policy's whole
    again = _claims(broker, broker.client.issue("SupportBot")["token"])
    assert again.limits == claims.limits and again.jti != claims.jti


def test_the_broker_adds_a_callers_limits_and_refuses_looser(broker: Broker) -> None:
    answer = broker.client.issue(
        "SupportBot", limits=["write:refunds amount<=20"], budgets=["write:refunds amount=50"]
    )
    claims = _claims(broker, answer["token"])
    assert claims.limits is not None and len(claims.limits) == 2
    with pytest.raises(LimitExceededError, match="limit 20"):
        claims.limits.check("write:refunds", {"amount": 21, "currency": "USD"})
    with pytest.raises(PermissionDeniedError, match="looser than its policy's"):
        broker.client.issue("SupportBot", limits=["write:refunds amount<=1000"])
    with pytest.raises(PermissionDeniedError, match="exceeds its policy's"):
        broker.client.issue("SupportBot", budgets=["write:refunds amount=1000"])
    with pytest.raises(InvalidLimitError):  # checked by the client before it asks
        broker.client.issue("SupportBot", limits=["write:refunds amount<<1"])
    audit = (broker.root / "keys" / "broker-audit.jsonl").read_text()
    assert "looser than its policy" in audit


def test_a_malformed_limit_is_a_400_from_the_broker(broker: Broker) -> None:
    from agentsudo_tokens.errors import ConfigError

    for body in (
        {"agent": "SupportBot", "limits": ["write:refunds amount<<1"]},
        {"agent": "SupportBot", "limits": "write:refunds amount<=1"},
        {"agent": "SupportBot", "budgets": [5]},
        {"agent": "SupportBot", "limits": ["write:refunds n<=1"] * 33},
        {"agent": "SupportBot", "limits": ["x" * 5000]},
    ):
        with pytest.raises(ConfigError):
            broker.client.request("POST", "/v1/tokens", body)


def test_agentsudo_issue_with_a_broker_takes_limit_and_budget(broker: Broker) -> None:
    env = {**os.environ, "AGENTSUDO_BROKER": broker.address}
    env.pop("AGENTSUDO_KEYS_DIR", None)
    done = sh(
        "issue", "--agent", "SupportBot", "--limit", "write:refunds amount<=10",
        "--budget", "write:refunds calls=3", cwd=broker.root, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    claims = _claims(broker, done.stdout.strip())
    assert claims.limits is not None and len(claims.limits) == 2
    done = sh(
        "issue", "--agent", "SupportBot", "--budget", "write:refunds calls=99",
        cwd=broker.root, env=env,
    )  # fmt: skip
    assert done.returncode != 0 and "calls 99 exceeds its policy's" in done.stderr
    assert done.stderr.count("\n") == 1

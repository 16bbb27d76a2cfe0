"""``agentsudo run --limit/--budget`` and ``Agent.delegate(limits=, budgets=)`` (issue 11 part 4).

Inside an agent (``AGENTSUDO_TOKEN`` and ``AGENTSUDO_BROKER`` set), ``run``
narrows the agent's token by exchange: the child carries the token's limits
that may apply plus the asked ones, its budget carved from the token's
remainder at the real broker. Outside one, ``run`` asks the broker (or mints
with the key directory) with the limits added.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker, init_keys
from installed_cli import sh

from agentsudo_tokens import Agent, KeySet, Verifier
from agentsudo_tokens.errors import DelegationRefusedError
from agentsudo_tokens.tokens.limit_entry import UNIT

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
delegable = true
max_depth = 2
callers = ["uid:{ME}"]
limits = ["write:refunds amount<=100"]
budgets = ["write:refunds amount=500 calls=20"]
"""
CHILD = """
import json, os
from agentsudo_tokens.tokens.verifier import decode_unverified
claims = decode_unverified(os.environ["AGENTSUDO_TOKEN"]).claims
print(json.dumps({"limits": claims.get("authorization_details"), "act": claims.get("act")}))
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path)
    running = Broker(tmp_path, POLICY)
    yield running
    running.stop()


def _env(broker: Broker, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_BROKER"] = broker.address
    if token is not None:
        env["AGENTSUDO_TOKEN"] = token
    return env


def _root(broker: Broker) -> str:
    return str(broker.client.issue("Orchestrator", ttl=600)["token"])


def _left(broker: Broker, token: str) -> dict[str, int]:
    (balance,) = broker.client.budgets(token).values()
    return {name: balance.left(name) for name in balance.limits}


def test_run_inside_an_agent_narrows_and_carves(broker: Broker, tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    root = _root(broker)
    done = sh(
        "run", "--agent", "Refunder", "--scopes", "write:refunds",
        "--limit", "write:refunds amount<=25", "--budget", "write:refunds amount=75 calls=3",
        "--", sys.executable, "child.py", cwd=tmp_path, env=_env(broker, root),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["act"] == {"sub": "Refunder"}
    assert seen["limits"] == [
        {"type": "agentsudo_limits", "scope": "write:refunds",
         "constraints": [{"arg": "amount", "le": 100}]},
        {"type": "agentsudo_limits", "scope": "write:refunds",
         "constraints": [{"arg": "amount", "le": 25}],
         "budget": {"calls": 3, "totals": {"amount": 75}}},
    ]  # fmt: skip
    assert _left(broker, root) == {"calls": 17, "sum:amount": 425 * UNIT}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scopes", "write:refunds"], "--budget 'write:refunds amount=N calls=N'"),
        (
            ["--scopes", "write:refunds", "--budget", "write:refunds amount=501 calls=1"],
            "amount 501 exceeds the parent token's",
        ),
        (
            [
                "--scopes",
                "write:refunds",
                "--limit",
                "write:refunds amount<=101",
                "--budget",
                "write:refunds amount=1 calls=1",
            ],
            "looser than the parent token's",
        ),  # fmt: skip
    ],
)
def test_run_inside_an_agent_refuses_in_one_line(
    broker: Broker, tmp_path: Path, args: list[str], words: str
) -> None:
    root = _root(broker)
    done = sh("run", *args, "--", sys.executable, "-c", "print('ran')", cwd=tmp_path,
              env=_env(broker, root))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "ran" not in done.stdout
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert _left(broker, root) == {"calls": 20, "sum:amount": 500 * UNIT}


def test_run_refuses_a_bad_line_before_anything(broker: Broker, tmp_path: Path) -> None:
    done = sh("run", "--limit", "write:refunds amount<<1", "--", sys.executable, "-c",
              "print('ran')", cwd=tmp_path, env=_env(broker, _root(broker)))  # fmt: skip
    assert done.returncode == 2 and "ran" not in done.stdout
    assert done.stderr.count("\n") == 1, done.stderr


def test_run_outside_an_agent_asks_the_broker_with_the_limits(
    broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    done = sh("run", "--agent", "Orchestrator", "--limit", "write:refunds amount<=7", "--",
              sys.executable, "child.py", cwd=tmp_path, env=_env(broker))  # fmt: skip
    assert done.returncode == 0, done.stderr
    limits = json.loads(done.stdout)["limits"]
    assert [entry.get("constraints") for entry in limits] == [
        [{"arg": "amount", "le": 100}],
        [{"arg": "amount", "le": 7}],
    ]


def test_run_with_a_key_directory_mints_the_limits(tmp_path: Path) -> None:
    init_keys(tmp_path)
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = sh("run", "--agent", "Bot", "--scopes", "write:refunds", "--keys-dir", "keys",
              "--budget", "write:refunds calls=2", "--", sys.executable, "child.py",
              cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["limits"] == [
        {"type": "agentsudo_limits", "scope": "write:refunds", "budget": {"calls": 2}}
    ]


def test_agent_delegate_takes_limits_and_budgets(broker: Broker) -> None:
    root = _root(broker)
    verifier = Verifier(KeySet.from_dict(broker.client.jwks()), audience="agentsudo")
    parent = Agent.from_token(root, verifier=verifier)
    child = parent.delegate(
        "Refunder", scopes=["write:refunds"], broker=broker.client,
        limits=["write:refunds amount<=10"], budgets=["write:refunds amount=20 calls=2"],
    )  # fmt: skip
    assert child.claims.limits is not None and len(child.claims.limits) == 2
    assert _left(broker, root) == {"calls": 18, "sum:amount": 480 * UNIT}
    with pytest.raises(DelegationRefusedError) as refused:
        parent.delegate("Refunder", scopes=["write:refunds"], broker=broker.client)
    assert refused.value.reason == "budget"

"""Sub-agents end to end (issue 10 parts 2 and 3): a real broker, real processes, a real service.

- ``agentsudo run --scopes ...`` inside an agent narrows its own token by exchange;
- ``current_agent().delegate(...)`` in Python, the sub-agent's session, its audit chain;
- cascade revocation: a FastAPI service under uvicorn that has only ``AGENTSUDO_BROKER``
  (keys and the signed revocation list from the broker) and a verifier holding the
  broker's store both refuse every descendant of a revoked token, and of a killed agent.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker
from installed_cli import AGENTSUDO, sh
from orders_service import ask, service, until

from agentsudo_tokens import Agent, KeySet, Verifier, current_agent, sudo
from agentsudo_tokens.audit.events import set_audit_log
from agentsudo_tokens.errors import DelegationRefusedError, PermissionDeniedError
from agentsudo_tokens.state import open_store

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
delegable = ["read:*"]
max_depth = 2
callers = ["uid:{ME}"]
"""

CHILD = """
import json
from agentsudo_tokens import Agent
agent = Agent.from_env()
print(json.dumps({"name": agent.name, "chain": list(agent.chain),
                  "scopes": list(agent.scopes.scopes), "exp": agent.claims.expires_at}))
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path, POLICY)  # agentsudo serve on a socket
    yield running
    running.stop()


def _env(broker: Broker, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_BROKER"] = broker.address
    if token is not None:
        env["AGENTSUDO_TOKEN"] = token
    return env


def _root(broker: Broker, scopes: list[str] | None = None) -> str:
    scopes = scopes or ["read:*", "write:refunds"]
    return str(broker.client.issue("Orchestrator", scopes=scopes, ttl=600)["token"])


# -- agentsudo run inside an agent ----------------------------------------------------------


def test_run_inside_an_agent_narrows_its_own_token(broker: Broker, tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    root = _root(broker)
    env = _env(broker, root)
    done = sh("run", "--scopes", "read:orders", "--", sys.executable, "child.py",
              cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["name"] == "Orchestrator"  # no --agent: a narrowed copy of itself
    assert seen["chain"] == ["Orchestrator", "Orchestrator"]
    assert seen["scopes"] == ["read:orders"]

    done = sh("run", "--agent", "Summarizer", "--scopes", "read:orders", "--ttl", "2m", "--",
              sys.executable, "child.py", cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["name"] == "Summarizer"
    assert seen["chain"] == ["Orchestrator", "Summarizer"]


@pytest.mark.parametrize(
    ("args", "words", "code"),
    [
        (["--scopes", "delete:customer"], "not within the parent token's scopes", 1),
        (["--scopes", "write:refunds"], "may not be passed on", 1),
        (["--scopes", "read:orders", "--ttl", "2h"], "would outlive the parent token", 1),
        (["--agent", "Bad Name", "--scopes", "read:orders"], "sub-agent: expected", 2),
    ],
)
def test_run_inside_an_agent_refuses_more_in_one_line(
    broker: Broker, tmp_path: Path, args: list[str], words: str, code: int
) -> None:
    (tmp_path / "child.py").write_text("print('ran')\n")
    done = sh("run", *args, "--", sys.executable, "child.py", cwd=tmp_path,
              env=_env(broker, _root(broker)))  # fmt: skip
    assert done.returncode == code
    assert "ran" not in done.stdout
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_grandchild_through_two_runs(broker: Broker, tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    middle = textwrap.dedent(f"""
        import subprocess, sys
        sys.exit(subprocess.call([{AGENTSUDO!r}, "run", "--agent", "Helper", "--scopes",
                                  "read:orders", "--", sys.executable, "child.py"]))
    """)
    (tmp_path / "middle.py").write_text(middle)
    env = _env(broker, _root(broker))
    done = sh("run", "--agent", "Summarizer", "--scopes", "read:*", "--", sys.executable,
              "middle.py", cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chain"] == ["Orchestrator", "Summarizer", "Helper"]


# -- Agent.delegate in Python -------------------------------------------------------------


@sudo(scope="read:orders")
def read_orders() -> str:
    agent = current_agent()
    assert agent is not None
    return agent.name


@sudo(scope="write:refunds")
def refund() -> str:
    return "refunded"


def test_delegate_runs_a_sub_agent_in_a_session_of_the_delegated_token(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_BROKER", broker.address)
    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    verifier = Verifier(KeySet.from_dict(broker.client.jwks()))
    with Agent.from_token(_root(broker), verifier=verifier).start_session():
        orchestrator = current_agent()
        assert orchestrator is not None and orchestrator.chain == ("Orchestrator",)
        child = orchestrator.delegate("Summarizer", scopes=["read:orders"], ttl=300)
        assert child.name == "Summarizer" and child.chain == ("Orchestrator", "Summarizer")
        with child.start_session():
            assert read_orders() == "Summarizer"
            with pytest.raises(PermissionDeniedError):
                refund()  # the parent holds it; the child does not
            grandchild = current_agent().delegate("Helper")  # type: ignore[union-attr]
            assert grandchild.chain == ("Orchestrator", "Summarizer", "Helper")
            with pytest.raises(DelegationRefusedError) as refused:
                grandchild.delegate("Deeper")
            assert refused.value.reason == "depth"
        assert refund() == "refunded"  # the outer session is back
        with pytest.raises(DelegationRefusedError):
            orchestrator.delegate("Summarizer", scopes=["read:orders"], ttl=3600)
    set_audit_log(None)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    allowed = [e for e in events if e.get("outcome") == "allowed"]
    assert allowed[0]["agent"] == "Summarizer"
    assert allowed[0]["chain"] == ["Orchestrator", "Summarizer"]
    denied = [e for e in events if e.get("outcome") == "denied"]
    assert denied[0]["chain"] == ["Orchestrator", "Summarizer"]
    assert all(e["chain"] == ["Orchestrator"] for e in events if e["agent"] == "Orchestrator")


def test_an_unsigned_agent_or_no_broker_cannot_delegate(broker: Broker) -> None:
    from agentsudo_tokens.errors import ConfigError

    with pytest.raises(ConfigError, match="unsigned"):
        Agent("Local", ["read:orders"]).delegate("Helper")
    verifier = Verifier(KeySet.from_dict(broker.client.jwks()))
    agent = Agent.from_token(_root(broker), verifier=verifier)
    with pytest.raises(ConfigError, match="AGENTSUDO_BROKER"):
        agent.delegate("Helper", scopes=["read:orders"])
    assert agent.delegate("Helper", scopes=["read:orders"], broker=broker.client).signed


# -- cascade revocation at a running service and at a store verifier ----------------------

SERVICE = """
    from typing import Annotated

    from fastapi import Depends, FastAPI

    from agentsudo_tokens import Agent
    from agentsudo_tokens.integrations.fastapi import require_scope

    app = FastAPI()


    @app.get("/orders")
    async def orders(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> dict:
        return {"read_by": agent.name, "chain": list(agent.chain)}
"""


def test_revoking_an_ancestor_refuses_every_descendant_at_a_running_service(
    broker: Broker, tmp_path: Path
) -> None:
    client = broker.client
    root = _root(broker, ["read:*"])
    child = client.exchange(root, actor="Summarizer")["access_token"]
    grandchild = client.exchange(child, actor="Helper", scopes=["read:orders"])["access_token"]
    sibling = client.exchange(root, actor="Other", scopes=["read:orders"])["access_token"]
    keys = KeySet.from_dict(client.jwks())
    state = broker.root / "keys" / "agentsudo-state.db"
    with_store = Verifier(keys, store=open_store(f"sqlite:///{state}"))
    workdir = tmp_path / "service"
    workdir.mkdir()
    env = _env(broker) | {
        "AGENTSUDO_REVOCATIONS_REFRESH": "1",
        "AGENTSUDO_REVOCATIONS_MAX_STALE": "30",
    }
    with service(env, workdir, SERVICE) as url:
        for token, name in ((root, "Orchestrator"), (child, "Summarizer"),
                            (grandchild, "Helper"), (sibling, "Other")):  # fmt: skip
            status, body = ask(url, token)
            assert status == 200, body
            assert json.loads(body)["read_by"] == name
        assert json.loads(ask(url, grandchild)[1])["chain"] == [
            "Orchestrator", "Summarizer", "Helper"
        ]  # fmt: skip

        client.revoke(token=child, reason="the summarizer misbehaved")
        status, body = until(url, grandchild, 401)
        assert status == 401 and "revoked" in body, body
        assert ask(url, child)[0] == 401
        assert ask(url, root)[0] == 200  # above the revoked token: untouched
        assert ask(url, sibling)[0] == 200
        for token in (child, grandchild):
            with pytest.raises(Exception, match="revoked"):
                with_store.verify(token)
        assert with_store.verify(sibling).agent == "Other"

        client.revoke(agent="Orchestrator")  # the kill switch of the root agent
        status, body = until(url, sibling, 401)
        assert status == 401, body
        assert ask(url, root)[0] == 401
        with pytest.raises(Exception, match="revoked"):
            with_store.verify(sibling)


@pytest.mark.parametrize("scopes", [[], [""], ["  "]])
def test_asking_for_no_scopes_is_refused_not_all_of_the_parents(
    broker: Broker, scopes: list[str]
) -> None:
    """An empty list went as "scope=", which the broker rightly reads as not asked: the
    parent's whole grant. Asked for nothing is now refused before anything is sent."""
    from agentsudo_tokens.errors import DelegationRefusedError, InvalidScopeError

    verifier = Verifier(KeySet.from_dict(broker.client.jwks()))
    agent = Agent.from_token(_root(broker, ["read:orders", "read:customers"]), verifier=verifier)
    with pytest.raises((DelegationRefusedError, InvalidScopeError)):  # [""]: not a scope
        agent.delegate("Helper", scopes=scopes, broker=broker.client)
    with pytest.raises(DelegationRefusedError, match="no scopes asked for"):
        broker.client.exchange(_root(broker), actor="Helper", scopes=scopes)
    with pytest.raises(DelegationRefusedError, match="no audience asked for"):
        agent.delegate("Helper", scopes=["read:orders"], audience=[], broker=broker.client)


@pytest.mark.parametrize("value", ["", " ", ","])
def test_run_inside_an_agent_with_empty_scopes_is_refused(
    broker: Broker, tmp_path: Path, value: str
) -> None:
    (tmp_path / "child.py").write_text("print('ran')\n")
    done = sh("run", "--agent", "Kid", "--scopes", value, "--", sys.executable, "child.py",
              cwd=tmp_path, env=_env(broker, _root(broker)))  # fmt: skip
    assert done.returncode != 0 and "ran" not in done.stdout
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr

"""The CLI with a broker (issue 9 part 4): no key directory on the client's side.

Each test starts a real broker (``agentsudo serve``) with its keys in
``broker/``, and runs the installed ``agentsudo`` in ``project/``, a directory
WITHOUT any ``keys/``, with only ``AGENTSUDO_BROKER`` set, as a developer, a
launcher or an admin would. The agent started by ``agentsudo run`` is a real
process that verifies its token with the broker's JWKS and revocation list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_harness import Broker, init_keys
from installed_cli import AGENTSUDO

from agentsudo_tokens import Agent, JwksUrl, Settings, Verifier
from agentsudo_tokens.config import child_environment
from agentsudo_tokens.guard.decision import ApprovalContext
from agentsudo_tokens.guard.elevation import _Waiting, ask
from agentsudo_tokens.state import open_store

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
ask = ["delete:customer"]
max_ttl = "1h"
callers = ["uid:{ME}"]
audiences = ["agentsudo", "billing"]
"""
NOT_AN_ADMIN = POLICY.replace(f'admins = ["uid:{ME}"]', f'admins = ["uid:{ME + 4242}"]')

CHILD_PY = """
    import json, os, sys, time
    from agentsudo_tokens import current_agent, sudo

    @sudo(scope="read:orders")
    def read_orders():
        return "orders read"

    @sudo(scope="delete:customer")
    def delete_customer():
        return "customer deleted"

    names = sorted(name for name in os.environ if name.startswith("AGENTSUDO_"))
    print("ENV " + json.dumps(names), flush=True)
    print("GUARDED " + read_orders(), flush=True)
    agent = current_agent()
    print("AGENT " + json.dumps([agent.name, agent.jti]), flush=True)
    try:
        delete_customer()
        print("DELETED", flush=True)
    except PermissionError:
        print("REFUSED delete:customer", flush=True)
    if sys.argv[1:] == ["loop"]:  # until refused: a running agent whose tokens are revoked
        while True:
            try:
                read_orders()
            except PermissionError as exc:
                print("REVOKED " + str(exc), flush=True)
                break
            print("STILL", flush=True)
            time.sleep(0.1)
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path / "broker")
    running = Broker(tmp_path / "broker", POLICY)
    yield running
    running.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Where the developer works: no keys/ here."""
    path = tmp_path / "project"
    path.mkdir()
    (path / "child.py").write_text(textwrap.dedent(CHILD_PY))
    return path


def env_for(broker: Broker | str, **more: str) -> dict[str, str]:
    """This environment without AGENTSUDO_*, plus AGENTSUDO_BROKER (and ``more``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_BROKER"] = broker if isinstance(broker, str) else broker.address
    env.update({f"AGENTSUDO_{name}": value for name, value in more.items()})
    return env


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTSUDO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr (and nothing on stdout): a refusal, never a traceback."""
    assert done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def no_keys_here(project: Path) -> None:
    assert sorted(p.name for p in project.iterdir()) == ["child.py"]  # nothing made, nothing read


# -- issue ---------------------------------------------------------------------------


def test_issue_asks_the_broker_and_the_token_verifies_with_its_jwks(
    broker: Broker, project: Path
) -> None:
    env = env_for(broker)
    done = cli("issue", "--agent", "SupportBot", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    # the default verifier of a process with only AGENTSUDO_BROKER: the JWKS over the socket
    verifier = Verifier.from_settings(Settings(broker=broker.address))
    claims = verifier.verify(token)
    assert claims.subject == "SupportBot"
    assert sorted(claims.scopes.scopes) == ["read:orders", "write:refunds"]  # the policy's
    assert isinstance(verifier.keys, JwksUrl) and verifier.keys.url == broker.address
    checked = cli("verify", "--scope", "write:refunds", cwd=project, env=env | {
        "AGENTSUDO_TOKEN": token})  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    narrow = cli(
        "issue", "--agent", "SupportBot", "--scopes", "read:orders", "--ttl", "10m",
        "--aud", "billing", "--json", cwd=project, env=env,
    )  # fmt: skip
    assert narrow.returncode == 0, narrow.stderr
    shown = json.loads(narrow.stdout)
    assert shown["claims"]["scope"] == "read:orders" and shown["claims"]["aud"] == "billing"
    assert shown["claims"]["exp"] - shown["claims"]["iat"] == 600
    assert shown["broker"] == broker.address
    assert verifier.verify(shown["token"], audience="billing").jti == shown["claims"]["jti"]
    no_keys_here(project)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--scopes", "delete:customer"), "delete:customer"),  # an ask scope: one call at a time
        (("--scopes", "read:*"), "read:*"),  # wider than granted
        (("--ttl", "2h"), "1h"),  # longer than max_ttl
        (("--aud", "payments"), "payments"),
    ],
)
def test_a_request_beyond_the_policy_is_refused_in_one_line(
    broker: Broker, project: Path, args: tuple[str, ...], said: str
) -> None:
    done = cli("issue", "--agent", "SupportBot", *args, cwd=project, env=env_for(broker))
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith("agentsudo: broker: ") and said in line
    no_keys_here(project)


def test_an_agent_not_in_the_policy_is_refused(broker: Broker, project: Path) -> None:
    done = cli("issue", "--agent", "AnalyticsBot", cwd=project, env=env_for(broker))
    assert done.returncode == 1 and "AnalyticsBot" in one_line(done)


def test_no_broker_at_the_address_is_one_line_naming_it(tmp_path: Path, project: Path) -> None:
    address = f"unix://{tmp_path}/nobody.sock"
    for args in (
        ("issue", "--agent", "SupportBot"),
        ("run", "--agent", "SupportBot", "--", sys.executable, "child.py"),
        ("revoke", "--agent", "SupportBot"),
        ("approvals",),
    ):
        done = cli(*args, cwd=project, env=env_for(address))
        assert done.returncode == 2, (args, done.stderr)  # a configuration error, as ConfigError
        line = one_line(done)
        assert address in line and "cannot be reached" in line
    no_keys_here(project)


def test_a_key_directory_flag_with_a_broker_is_a_usage_error(broker: Broker, project: Path) -> None:
    done = cli("issue", "--agent", "SupportBot", "--keys-dir", "keys", cwd=project,
               env=env_for(broker))  # fmt: skip
    assert done.returncode == 2 and "AGENTSUDO_BROKER" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_without_a_broker_scopes_are_still_required(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = cli("issue", "--agent", "SupportBot", cwd=project, env=env)
    assert done.returncode == 2 and "Missing option '--scopes'" in done.stderr


# -- run -----------------------------------------------------------------------------


def test_run_gives_the_child_a_token_and_the_broker_never_a_key_path(
    broker: Broker, project: Path
) -> None:
    # inherited paths into a key directory and a store: the child must not get them
    env = env_for(
        broker,
        KEYS_DIR=str(broker.root / "keys"),
        STORE=f"sqlite:///{broker.root / 'keys' / 'agentsudo-state.db'}",
        JWKS=str(broker.root / "keys" / "jwks.json"),
        BROKER_CREDENTIAL="the launcher's own",
    )
    done = cli("run", "--agent", "SupportBot", "--", sys.executable, "child.py", cwd=project,
               env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert json.loads(lines[0].removeprefix("ENV ")) == ["AGENTSUDO_BROKER", "AGENTSUDO_TOKEN"]
    assert lines[1] == "GUARDED orders read"
    name, jti = json.loads(lines[2].removeprefix("AGENT "))
    assert name == "SupportBot" and jti  # a verified token, not an unsigned session
    assert lines[3] == "REFUSED delete:customer"  # the policy's ask scope is not in the token
    no_keys_here(project)


def test_child_environment_in_broker_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", "/srv/keys")
    monkeypatch.setenv("AGENTSUDO_STORE", "redis://:secret@db:6379/0")
    monkeypatch.setenv("AGENTSUDO_JWKS", "/srv/keys/jwks.json")
    monkeypatch.setenv("AGENTSUDO_BROKER_CREDENTIAL", "admin-credential")
    monkeypatch.setenv("AGENTSUDO_BROKER", "unix:///run/agentsudo/broker.sock")
    env = child_environment("tok", jwks="/srv/keys/jwks.json", store="sqlite:///x.db")
    names = {name for name in env if name.startswith("AGENTSUDO_")}
    assert names == {"AGENTSUDO_TOKEN", "AGENTSUDO_BROKER"}
    assert env["AGENTSUDO_BROKER"] == "unix:///run/agentsudo/broker.sock"
    monkeypatch.setenv("AGENTSUDO_JWKS", "https://keys.example/jwks.json")  # a URL stays
    assert child_environment("tok")["AGENTSUDO_JWKS"] == "https://keys.example/jwks.json"
    monkeypatch.delenv("AGENTSUDO_BROKER")
    monkeypatch.delenv("AGENTSUDO_JWKS")
    env = child_environment("tok", broker="https://broker.example:8443/")
    assert env["AGENTSUDO_BROKER"] == "https://broker.example:8443"
    assert "AGENTSUDO_KEYS_DIR" not in env and "AGENTSUDO_STORE" not in env


def test_the_broker_is_where_a_verifier_finds_the_keys() -> None:
    assert Settings(broker="unix:///b.sock").jwks_source == "unix:///b.sock"
    https = Settings(broker="https://broker.example:8443")
    assert https.jwks_source == "https://broker.example:8443/.well-known/jwks.json"
    assert Settings(broker="unix:///b.sock", jwks="/k/jwks.json").jwks_source == "/k/jwks.json"


# -- revoke --------------------------------------------------------------------------


def test_revoke_through_the_broker_reaches_a_running_agent(broker: Broker, project: Path) -> None:
    # the list is fetched every AGENTSUDO_REVOCATIONS_REFRESH seconds (default 10): 1 here
    env = env_for(broker, REVOCATIONS_REFRESH="1")
    agent = subprocess.Popen(
        [AGENTSUDO, "run", "--agent", "SupportBot", "--", sys.executable, "child.py", "loop"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        while (line := agent.stdout.readline()) != "STILL\n":
            assert line, agent.stderr.read() if agent.stderr else ""
        done = cli("revoke", "--agent", "SupportBot", "--reason", "compromised", cwd=project,
                   env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("revoked: every token of agent 'SupportBot'")
        assert broker.address in done.stdout
        rest, errors = agent.communicate(timeout=90)  # the child ends when refused
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert "REVOKED" in rest and "revoked" in rest.rsplit("REVOKED", 1)[1].lower(), errors
    assert agent.returncode == 0


def test_revoke_one_token_or_jti_as_json(broker: Broker, project: Path) -> None:
    env = env_for(broker)
    minted = broker.client.issue("SupportBot")
    done = cli("revoke", minted["token"], "--json", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["ok"] and shown["revoked"] == "token" and shown["target"] == minted["jti"]
    other = broker.client.issue("SupportBot")
    done = cli("revoke", other["jti"], cwd=project, env=env)
    assert done.returncode == 0 and f"token {other['jti']!r}" in done.stdout
    garbage = cli("revoke", "not a jti", cwd=project, env=env)
    assert garbage.returncode == 2  # refused here, nothing sent


def test_only_an_admin_revokes_and_answers(tmp_path: Path, project: Path) -> None:
    init_keys(tmp_path / "broker")
    running = Broker(tmp_path / "broker", NOT_AN_ADMIN)
    try:
        env = env_for(running)
        assert cli("issue", "--agent", "SupportBot", cwd=project, env=env).returncode == 0
        for args in (
            ("revoke", "--agent", "SupportBot"),
            ("approvals",),
            ("approvals", "show", "apr_" + "x" * 22),
            ("approve", "apr_" + "x" * 22),
            ("deny", "apr_" + "x" * 22),
        ):
            done = cli(*args, cwd=project, env=env)
            assert done.returncode == 1, (args, done.stderr)
            assert "is not an admin of this broker" in one_line(done)
    finally:
        running.stop()


# -- approvals -----------------------------------------------------------------------


def _waiting(broker: Broker, query: str) -> _Waiting:
    """A request filed straight into the broker's store, in the format the broker files
    an agent's elevation request in (the last test files one through the broker)."""
    store = open_store(f"sqlite:///{broker.root / 'keys' / 'agentsudo-state.db'}")
    agent = Agent("SupportBot", ["read:orders"])
    waiting = _Waiting(ask(timeout=120), store, agent, "delete:customer",
                       ApprovalContext("crm.delete_customer", {"query": query}))  # fmt: skip
    waiting.start()
    return waiting


def test_approvals_list_show_approve_and_deny_through_the_broker(
    broker: Broker, project: Path
) -> None:
    env = env_for(broker)
    empty = cli("approvals", cwd=project, env=env)
    assert empty.returncode == 0 and "no approval requests are waiting" in empty.stderr
    long = "DELETE FROM customers WHERE id = 7 /* " + "x" * 200 + " */\x1b[2J"
    first, second = _waiting(broker, long), _waiting(broker, "id = 8")
    listed = cli("approvals", cwd=project, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert [row.split()[0] for row in rows] == [first.request.id, second.request.id]
    assert "SupportBot  delete:customer  crm.delete_customer(query=" in rows[0]
    assert "(shortened; agentsudo approvals show" in rows[0] and "\x1b" not in listed.stdout
    as_json = json.loads(cli("approvals", "--json", cwd=project, env=env).stdout)
    assert [item["id"] for item in as_json] == [first.request.id, second.request.id]

    shown = cli("approvals", "show", first.request.id, cwd=project, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"request    {first.request.id}" in shown.stdout
    assert "\\u001b[2J" in shown.stdout and "\x1b" not in shown.stdout  # whole, escaped
    assert "x" * 200 in shown.stdout
    assert f"agentsudo approve {first.request.id}" in shown.stderr

    approved = cli("approve", first.request.id, cwd=project, env=env)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"approved: {first.request.id}: agent 'SupportBot' asks")
    verdict = first.poll()
    assert verdict is not None and verdict.approved
    assert verdict.by is not None and verdict.by.startswith(f"uid {ME}")  # the broker's word

    denied = cli("deny", second.request.id, "--reason", "not this one", "--json", cwd=project,
                 env=env)  # fmt: skip
    assert denied.returncode == 0, denied.stderr
    assert json.loads(denied.stdout)["answer"] == "denied"
    verdict = second.poll()
    assert verdict is not None and not verdict.approved and "not this one" in verdict.why

    again = cli("approve", second.request.id, cwd=project, env=env)
    assert again.returncode == 1 and "no approval request" in one_line(again)
    bad = cli("approvals", "show", "../../healthz", cwd=project, env=env)
    assert bad.returncode == 1 and "approval request" in one_line(bad)
    no_keys_here(project)


def test_the_python_client_answers_and_the_broker_names_the_caller(broker: Broker) -> None:
    waiting = _waiting(broker, "id = 9")
    assert [r.id for r in broker.client.approvals()] == [waiting.request.id]
    request = broker.client.approval(waiting.request.id)
    assert request == waiting.request and request.arguments_json == '{"query":"id = 9"}'
    assert broker.client.approve(waiting.request.id, by="on-call") == waiting.request
    verdict = waiting.poll()
    assert verdict is not None and verdict.approved and verdict.by is not None
    assert verdict.by.startswith(f"uid {ME}") and verdict.by.endswith("as 'on-call'")
    assert broker.client.approvals() == []


ASK_PY = """
    from agentsudo_tokens import sudo
    from agentsudo_tokens.guard.elevation import ask

    @sudo(scope="delete:customer", on_deny=ask(timeout=120, poll_interval=0.05))
    def delete_customer(customer_id):
        return "deleted " + customer_id

    try:
        print("RAN " + delete_customer("c7"), flush=True)
    except PermissionError as exc:
        print("REFUSED " + str(exc), flush=True)
"""


def test_an_agent_run_by_the_cli_asks_and_the_admin_answers_with_the_cli(
    broker: Broker, project: Path
) -> None:
    (project / "ask.py").write_text(textwrap.dedent(ASK_PY))
    env = env_for(broker)
    agent = subprocess.Popen(
        [AGENTSUDO, "run", "--agent", "SupportBot", "--", sys.executable, "ask.py"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        waiting: list[dict[str, object]] = []
        while not waiting and agent.poll() is None:  # until its request is filed at the broker
            listed = cli("approvals", "--json", cwd=project, env=env)
            assert listed.returncode == 0, listed.stderr
            waiting = json.loads(listed.stdout)
        assert len(waiting) == 1, agent.communicate()
        request = waiting[0]
        assert request["agent"] == "SupportBot" and request["scope"] == "delete:customer"
        assert request["arguments"] == {"customer_id": "c7"}
        done = cli("approve", str(request["id"]), cwd=project, env=env)
        assert done.returncode == 0, done.stderr
        out, errors = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert out == "RAN deleted c7\n", errors

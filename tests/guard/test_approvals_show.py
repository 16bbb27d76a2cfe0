"""What a human approves is what runs: the arguments whole, bound to one request.

Issue 8, item 5: approvals stored only a 200-character display text, so a
human approved ``SELECT 1 /* ... */`` and ``DROP TABLE users`` ran. Now the
request holds the call's canonical JSON whole (``agentsudo approvals show ID``
prints it; the list cuts and says so), a call too large to show whole is
refused without asking, and an answer is bound to its request id as well as
to the call, so an answer to request A never releases request B.

The end-to-end tests run the default configuration as a user would: one
directory, ``agentsudo keys init``, the SQLite store in ``keys/``, the agent a
real process, the human the installed ``agentsudo``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from installed_cli import sh

from agentsudo_cli.main import cli
from agentsudo_tokens import Agent, PermissionDeniedError, sudo
from agentsudo_tokens.errors import UnknownApprovalError
from agentsudo_tokens.guard.decision import ApprovalContext
from agentsudo_tokens.guard.elevation import _Waiting, ask
from agentsudo_tokens.state import Store
from agentsudo_tokens.state.approvals import (
    ANSWER,
    MAX_ARGUMENTS,
    REQUEST,
    approve,
    deny,
    lookup,
    pending,
)

SUPPORT = Agent("SupportBot", ["read:orders"])
FAST = 0.02
# Innocent for its first 200+ characters; the end is what matters.
QUERY = "SELECT 1 /* " + "nothing to see here " * 15 + "*/; DROP TABLE users"


AGENT_PY = """
    import json, sys
    from agentsudo_tokens import sudo
    from agentsudo_tokens.guard.elevation import ask

    @sudo(scope="write:db", on_deny=ask(timeout=60, poll_interval=0.05))
    def run_sql(query):
        return query  # what would reach the database

    try:
        print("RAN " + json.dumps(run_sql(sys.argv[1])), flush=True)
    except PermissionError as exc:
        print("REFUSED " + str(exc), flush=True)
"""


def _spawn_agent(workdir: Path, token: str, query: str) -> subprocess.Popen[str]:
    script = workdir / "agent.py"
    script.write_text(textwrap.dedent(AGENT_PY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env["AGENTSUDO_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, str(script), query],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _issue(workdir: Path) -> str:
    issued = sh("issue", "--agent", "ReportBot", "--scopes", "read:db", cwd=workdir)
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def _wait_for_requests(workdir: Path, count: int, *agents: subprocess.Popen[str]) -> list[str]:
    """Poll ``agentsudo approvals`` until ``count`` requests are listed; their ids, in order."""
    deadline = time.monotonic() + 30
    while True:
        listed = sh("approvals", cwd=workdir)
        assert listed.returncode == 0, listed.stderr  # "disk I/O error" here: issue 8 item 1
        ids = re.findall(r"^(apr_[A-Za-z0-9_-]+)  ", listed.stdout, flags=re.MULTILINE)
        if len(ids) >= count:
            return ids
        for agent in agents:
            assert agent.poll() is None, agent.communicate()
        assert time.monotonic() < deadline, "the requests never appeared in `agentsudo approvals`"
        time.sleep(0.1)


def _finish(agent: subprocess.Popen[str]) -> str:
    try:
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, err
    return out.strip()


# -- the attack: a long argument whose display was cut ---------------------------------------


def test_the_human_sees_the_whole_call_and_exactly_that_runs(workdir: Path) -> None:
    agent = _spawn_agent(workdir, _issue(workdir), QUERY)
    try:
        (request_id,) = _wait_for_requests(workdir, 1, agent)
        listed = sh("approvals", cwd=workdir).stdout
        (row,) = listed.splitlines()
        assert "DROP TABLE" not in row  # the list cuts a long call, and says so
        assert row.count(f"(shortened; agentsudo approvals show {request_id})") == 1

        shown = sh("approvals", "show", request_id, cwd=workdir)
        assert shown.returncode == 0, shown.stderr
        (argument,) = [line for line in shown.stdout.splitlines() if line.startswith("  query = ")]
        seen = json.loads(argument.removeprefix("  query = "))
        assert seen == QUERY and seen.endswith("DROP TABLE users")  # the whole, nothing cut
        assert "shortened" not in shown.stdout
        assert "scope      write:db" in shown.stdout and "agent      ReportBot" in shown.stdout
        as_json = json.loads(sh("approvals", "show", request_id, "--json", cwd=workdir).stdout)
        assert as_json["arguments"] == {"query": QUERY}
        assert as_json["arguments_json"] == json.dumps({"query": QUERY}, separators=(",", ":"))

        approved = sh("approve", request_id, cwd=workdir)
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith(f"approved: {request_id}: agent 'ReportBot'")
        ran = _finish(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert ran.startswith("RAN "), ran  # a lost approval here: issue 8 item 1 (SQLite locks)
    assert json.loads(ran.removeprefix("RAN ")) == seen  # exactly what the human read


def test_an_approval_for_one_agent_process_never_releases_another(workdir: Path) -> None:
    """Two agent processes wait on identical calls; approving one leaves the other waiting."""
    token = _issue(workdir)
    first = _spawn_agent(workdir, token, "SELECT 2")
    second = None
    try:
        (first_id,) = _wait_for_requests(workdir, 1, first)
        second = _spawn_agent(workdir, token, "SELECT 2")
        ids = _wait_for_requests(workdir, 2, first, second)
        assert ids[0] == first_id
        second_id = ids[1]
        assert sh("approve", first_id, cwd=workdir).returncode == 0
        assert _finish(first) == 'RAN "SELECT 2"'
        still = sh("approvals", cwd=workdir).stdout
        assert second_id in still and first_id not in still
        assert second.poll() is None  # still waiting: the other answer did not release it
        assert sh("deny", second_id, "--reason", "not this one", cwd=workdir).returncode == 0
        refused = _finish(second)
        assert refused.startswith("REFUSED ") and "not this one" in refused
    finally:
        for agent in (first, second):
            if agent is not None and agent.poll() is None:
                agent.kill()
                agent.communicate()


# -- bound to the request id, not only to the call -------------------------------------------


def _started(store: Store, arguments: dict[str, object]) -> _Waiting:
    context = ApprovalContext("mod.run_sql", arguments)
    waiting = _Waiting(ask(timeout=30), store, SUPPORT, "write:db", context)
    waiting.start()
    return waiting


def test_an_answer_to_request_a_never_releases_request_b(store: Store) -> None:
    a = _started(store, {"query": "SELECT 2"})
    b = _started(store, {"query": "SELECT 2"})  # the same agent, token, scope, function, arguments
    approve(store, a.request.id)
    assert b.poll() is None  # the answer to A is not B's
    answer = store.get(ANSWER + a.request.id)
    assert answer is not None
    store.put(ANSWER + b.request.id, answer, expires_at=time.time() + 60)  # A's answer, replayed
    verdict = b.poll()
    assert verdict is not None and verdict.approved is False
    assert "does not match this call" in verdict.why
    released = a.poll()
    assert released is not None and released.approved  # A's own answer still releases A


def test_a_request_record_that_shows_other_arguments_cannot_be_approved(store: Store) -> None:
    """The stored request shows SELECT, its hashes say DROP: never listed, never approved."""
    waiting = _started(store, {"query": "DROP TABLE users"})
    raw = store.get(REQUEST + waiting.request.id)
    assert raw is not None
    record = json.loads(raw)
    record["arguments"] = {"query": "SELECT 1"}  # what a person would read
    store.put(REQUEST + waiting.request.id, json.dumps(record), expires_at=time.time() + 60)
    assert pending(store) == []
    with pytest.raises(UnknownApprovalError):
        approve(store, waiting.request.id)
    with pytest.raises(UnknownApprovalError):
        lookup(store, waiting.request.id)
    assert waiting.poll() is None


# -- a bound on what is stored ---------------------------------------------------------------


def test_arguments_too_large_to_show_whole_are_refused_without_asking(store: Store) -> None:
    @sudo(scope="write:db", on_deny=ask(timeout=5, store=store, poll_interval=FAST))
    def run_sql(query: str) -> str:
        return query

    huge = "SELECT 1 /* " + "x" * MAX_ARGUMENTS + " */; DROP TABLE users"
    with (
        SUPPORT.start_session(),
        pytest.raises(PermissionDeniedError, match=r"over the 65536-byte limit"),
    ):
        run_sql(huge)
    assert pending(store) == [] and store.items(REQUEST) == {}  # nobody was asked


def test_arguments_up_to_the_limit_are_shown_whole(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    padding = MAX_ARGUMENTS - len('{"query":""}') - len("; DROP TABLE users")
    query = "x" * padding + "; DROP TABLE users"
    waiting = _started(store, {"query": query})
    assert len(waiting.request.arguments_json) == MAX_ARGUMENTS
    env = {"AGENTSUDO_STORE": store_url, "AGENTSUDO_KEYS_DIR": str(tmp_path)}
    shown = CliRunner().invoke(cli, ["approvals", "show", waiting.request.id], env=env)
    assert shown.exit_code == 0, shown.stderr
    assert f"  query = {json.dumps(query)}\n" in shown.stdout
    deny(store, waiting.request.id)


def test_an_argument_that_cannot_be_shown_is_refused_without_asking(store: Store) -> None:
    class Secretive:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    @sudo(scope="write:db", on_deny=ask(timeout=5, store=store, poll_interval=FAST))
    def run(thing: object) -> str:
        return "ran"

    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError, match="cannot be shown"):
        run(Secretive())
    assert pending(store) == []


def test_values_json_lacks_are_shown_by_type_and_repr(store: Store) -> None:
    from decimal import Decimal

    waiting = _started(store, {"amount": Decimal("10.50"), "tags": ("a", "b")})
    assert waiting.request.arguments_json == (
        '{"amount":{"$repr":"Decimal(\'10.50\')","$type":"decimal.Decimal"},"tags":["a","b"]}'
    )
    assert lookup(store, waiting.request.id).arguments_json == waiting.request.arguments_json


def test_non_ascii_is_shown_escaped_so_look_alikes_cannot_hide(store: Store) -> None:
    waiting = _started(store, {"table": "us\u0435rs"})  # a Cyrillic e
    assert waiting.request.arguments["table"] == '"us\\u0435rs"'

"""Agents and sessions: nesting, isolation across threads, tasks and pools, the ambient token."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentsudo_tokens import (
    Agent,
    InvalidTokenError,
    Issuer,
    KeyDirectory,
    PermissionDeniedError,
    ScopeSet,
    Verifier,
    current_agent,
    sudo,
)


@sudo(scope="read:orders")
def read_orders() -> str:
    agent = current_agent()
    assert agent is not None
    return agent.name


def test_sessions_nest_and_restore_the_outer_agent() -> None:
    outer, inner = Agent("Outer", ["read:orders"]), Agent("Inner", ["read:orders"])
    assert current_agent() is None
    with outer.start_session():
        assert read_orders() == "Outer"
        with inner.start_session():
            assert read_orders() == "Inner"
        assert read_orders() == "Outer"
    assert current_agent() is None


def test_session_restored_after_an_exception() -> None:
    bot = Agent("Bot", ["read:orders"])
    with pytest.raises(RuntimeError), bot.start_session():
        raise RuntimeError("boom")
    assert current_agent() is None


def test_one_session_object_cannot_be_entered_twice() -> None:
    session = Agent("Bot", ["read:orders"]).start_session()
    with session, pytest.raises(RuntimeError):
        session.__enter__()


def test_threads_do_not_see_each_others_sessions() -> None:
    all_started = threading.Barrier(8)  # every odd worker is inside its session before any check
    seen: dict[int, list[str]] = {}

    def worker(index: int) -> None:
        names: list[str] = []
        if index % 2:
            with Agent(f"Agent{index}", ["read:orders"]).start_session():
                all_started.wait()
                names.extend(read_orders() for _ in range(200))
        else:
            all_started.wait()
            names.append("none" if current_agent() is None else "leaked")
            try:
                read_orders()
                names.append("leaked-allow")
            except PermissionDeniedError:
                names.append("denied")
        seen[index] = names

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    for index, names in seen.items():
        if index % 2:
            assert set(names) == {f"Agent{index}"}
        else:
            assert names == ["none", "denied"]


def test_asyncio_tasks_do_not_leak_sessions() -> None:
    async def as_agent(name: str) -> list[str]:
        async with Agent(name, ["read:orders"]).start_session():
            names = []
            for _ in range(50):
                await asyncio.sleep(0)
                names.append(read_orders())
            return names

    async def without_agent() -> str:
        await asyncio.sleep(0)
        try:
            read_orders()
        except PermissionDeniedError:
            return "denied"
        return "leaked"

    async def main() -> list[object]:
        return await asyncio.gather(
            as_agent("A"), without_agent(), as_agent("B"), without_agent(), as_agent("C")
        )

    a, none1, b, none2, c = asyncio.run(main())
    assert set(a) == {"A"} and set(b) == {"B"} and set(c) == {"C"}  # type: ignore[arg-type]
    assert none1 == none2 == "denied"


def test_thread_pool_workers_do_not_inherit_or_keep_sessions() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        with Agent("Submitter", ["read:orders"]).start_session():
            plain = pool.submit(current_agent).result()
            copied = pool.submit(contextvars.copy_context().run, read_orders).result()
        after = [pool.submit(current_agent).result() for _ in range(4)]
    assert plain is None  # a pool thread does not see the submitter's session
    assert copied == "Submitter"  # unless the context is copied on purpose
    assert after == [None] * 4  # and nothing sticks to the worker threads


def test_agent_repr_hides_the_token(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue("SupportBot", "read:orders").token
    agent = Agent.from_token(token, verifier=verifier)
    assert token not in repr(agent)
    assert "signed" in repr(agent)
    assert agent.token == token
    assert agent.jti == agent.claims.jti  # type: ignore[union-attr]


def test_from_token_refuses_a_bad_token(verifier: Verifier) -> None:
    with pytest.raises(InvalidTokenError):
        Agent.from_token("not.a.token", verifier=verifier)


def test_from_token_uses_the_configured_keys(
    monkeypatch: pytest.MonkeyPatch, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    agent = Agent.from_token(issuer.issue("Bot", "read:orders").token)
    assert agent.name == "Bot"


def test_the_default_verifier_is_built_once_per_process(
    monkeypatch: pytest.MonkeyPatch, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    """A repeat ``from_token`` does not rebuild settings and verifier (issue 8, item 7)."""
    from agentsudo_tokens.guard.agent import _policy

    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    token = issuer.issue("Bot", "read:orders").token
    first = Agent.from_token(token)
    default = _policy.verifier
    assert default is not None and _policy.default_verifier() is default
    monkeypatch.setenv("AGENTSUDO_AUDIENCE", "elsewhere")  # read once: not per call
    assert Agent.from_token(token).claims is first.claims  # the same verifier's cache
    assert _policy.verifier is default
    _policy.reset()
    with pytest.raises(InvalidTokenError):  # a fresh process would read the new audience
        Agent.from_token(token)


# --- an agent is read-only: verified facts cannot be widened (issue 8, item 5) ----------------


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("scopes", ScopeSet(["**"])),
        ("name", "Admin"),
        ("session_ttl", 3600.0),
        ("_claims", None),
        ("_token", "forged"),
        ("_valid_until", float("inf")),
    ],
)
def test_a_verified_agent_cannot_be_widened(
    issuer: Issuer, verifier: Verifier, attribute: str, value: object
) -> None:
    agent = Agent.from_token(issuer.issue("Bot", "read:orders").token, verifier=verifier)
    with pytest.raises(AttributeError, match="read-only"):
        setattr(agent, attribute, value)
    with pytest.raises(AttributeError, match="read-only"):
        delattr(agent, attribute)
    assert agent.name == "Bot" and agent.signed and not agent.has_scope("admin:wipe")
    with agent.start_session(), pytest.raises(PermissionDeniedError, match="lacks scope"):
        wipe()


def test_an_in_process_agent_is_read_only_too() -> None:
    agent = Agent("Bot", ["read:orders"])
    with pytest.raises(AttributeError, match="read-only"):
        agent.scopes = ScopeSet(["**"])  # type: ignore[misc]
    assert copy.copy(agent) is agent and copy.deepcopy(agent) is agent
    assert agent.scopes.scopes == ("read:orders",)


@sudo(scope="admin:wipe")
def wipe() -> str:
    return "wiped"


# --- the ambient agent from AGENTSUDO_TOKEN, in real processes --------------------------------

AGENT_SCRIPT = textwrap.dedent(
    """
    from agentsudo_tokens import PermissionDeniedError, current_agent, sudo

    @sudo(scope="write:refunds")
    def process_refund(order_id, amount):
        return f"refunded {amount} for {order_id}"

    @sudo(scope="delete:customer")
    def delete_customer(customer_id):
        return "deleted"

    for call, args in ((process_refund, ("order_123", 50)), (delete_customer, ("c1",))):
        try:
            print("ALLOWED", call(*args))
        except PermissionDeniedError as exc:
            print("DENIED", exc)
    agent = current_agent()
    print("AGENT", agent.name if agent else None, agent.signed if agent else None)
    """
)


def _run_agent(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "my_agent.py"
    script.write_text(AGENT_SCRIPT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    return subprocess.run(
        [sys.executable, str(script)],
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ambient_token_needs_no_code_change(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    token = issuer.issue("SupportBot", "read:orders write:refunds").token
    done = _run_agent(
        tmp_path, {"AGENTSUDO_TOKEN": token, "AGENTSUDO_JWKS": str(key_dir.jwks_path)}
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ALLOWED refunded 50 for order_123"
    assert lines[1].startswith("DENIED") and "delete:customer" in lines[1]
    assert "read:orders" not in lines[1]
    assert lines[2] == "AGENT SupportBot True"


def test_ambient_token_found_through_the_key_directory(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    token = issuer.issue("SupportBot", "write:refunds").token
    done = _run_agent(tmp_path, {"AGENTSUDO_TOKEN": token, "AGENTSUDO_KEYS_DIR": str(key_dir.path)})
    assert done.stdout.splitlines()[0] == "ALLOWED refunded 50 for order_123", done.stderr


@pytest.mark.parametrize("tamper", ["flip-signature", "garbage", "other-issuer-key"])
def test_a_bad_ambient_token_denies_everything(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer, tamper: str
) -> None:
    token = issuer.issue("SupportBot", "write:refunds delete:customer").token
    if tamper == "flip-signature":
        head, body, sig = token.split(".")
        token = f"{head}.{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
    elif tamper == "garbage":
        token = "definitely-not-a-token"
    else:
        other = KeyDirectory.init(tmp_path / "other")
        token = Issuer(other.signing_key()).issue("SupportBot", "write:refunds").token
    done = _run_agent(
        tmp_path, {"AGENTSUDO_TOKEN": token, "AGENTSUDO_JWKS": str(key_dir.jwks_path)}
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("DENIED") and "AGENTSUDO_TOKEN was refused" in lines[0]
    assert lines[1].startswith("DENIED")
    assert token not in done.stdout + done.stderr


def test_expired_ambient_token_denies(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    import time

    token = issuer.issue("SupportBot", "write:refunds", ttl=60, now=time.time() - 3600).token
    done = _run_agent(
        tmp_path, {"AGENTSUDO_TOKEN": token, "AGENTSUDO_JWKS": str(key_dir.jwks_path)}
    )
    assert done.stdout.splitlines()[0].startswith("DENIED")
    assert "expired" in done.stdout.splitlines()[0]


def test_an_explicit_session_beats_the_ambient_token(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    token = issuer.issue("ReadOnlyBot", "read:orders").token
    script = tmp_path / "inner.py"
    script.write_text(
        textwrap.dedent(
            """
            from agentsudo_tokens import Agent, current_agent
            print(current_agent().name)
            with Agent("Local", ["read:orders"]).start_session():
                print(current_agent().name)
            print(current_agent().name)
            """
        )
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**clean, "AGENTSUDO_TOKEN": token, "AGENTSUDO_JWKS": str(key_dir.jwks_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["ReadOnlyBot", "Local", "ReadOnlyBot"], done.stderr

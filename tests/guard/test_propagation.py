"""Carrying the acting agent to threads and child processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentsudo_tokens import (
    Agent,
    Issuer,
    KeyDirectory,
    PermissionDeniedError,
    Verifier,
    current_agent,
    sudo,
)
from agentsudo_tokens.guard.propagation import (
    ContextThreadPoolExecutor,
    agent_env,
    copy_session,
    current_token,
)


@sudo(scope="read:orders")
def read_orders() -> str:
    agent = current_agent()
    assert agent is not None
    return agent.name


def name_now() -> str | None:
    agent = current_agent()
    return agent.name if agent else None


# --- current_token ----------------------------------------------------------


def test_current_token_is_the_sessions(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with Agent.from_token(token, verifier=verifier).start_session():
        assert current_token() == token


def test_current_token_refuses_without_a_signed_agent() -> None:
    with pytest.raises(PermissionDeniedError, match="no active agent session"):
        current_token()
    with Agent("Local", ["read:orders"]).start_session():
        with pytest.raises(PermissionDeniedError, match="unsigned in-process agent") as err:
            current_token()
    assert err.value.agent == "Local"


# --- agent_env: child processes ---------------------------------------------


def test_agent_env_carries_the_token_and_absolute_keys(
    issuer: Issuer, verifier: Verifier, key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_TOKEN", "an-inherited-token")
    monkeypatch.setenv("AGENTSUDO_KEYS_DIR", str(key_dir.path))
    monkeypatch.setenv("PATH_MARKER", "kept")
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with Agent.from_token(token, verifier=verifier).start_session():
        env = agent_env()
    assert env["AGENTSUDO_TOKEN"] == token  # the session's, not the inherited one
    assert env["AGENTSUDO_JWKS"] == str(key_dir.jwks_path.resolve())
    assert env["PATH_MARKER"] == "kept"


def test_agent_env_keeps_a_configured_jwks(
    issuer: Issuer, verifier: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_JWKS", "https://issuer.example/jwks.json")
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with Agent.from_token(token, verifier=verifier).start_session():
        assert agent_env(jwks="/ignored")["AGENTSUDO_JWKS"] == "https://issuer.example/jwks.json"


def test_agent_env_refuses_without_a_token() -> None:
    with Agent("Local", ["read:orders"]).start_session():
        with pytest.raises(PermissionDeniedError):
            agent_env()


def test_a_child_process_acts_as_the_parents_session(
    issuer: Issuer, verifier: Verifier, key_dir: KeyDirectory, tmp_path: Path
) -> None:
    token = issuer.issue("ChildBot", ["read:orders"]).token
    child = (
        "from agentsudo_tokens import sudo, current_agent\n"
        "@sudo(scope='read:orders')\n"
        "def f(): return current_agent().name\n"
        "print(f())\n"
    )
    with Agent.from_token(token, verifier=verifier).start_session():
        env = agent_env(jwks=str(key_dir.jwks_path))  # the keys this session was verified with
    done = subprocess.run(
        [sys.executable, "-c", child],
        env=env,
        cwd=tmp_path,  # another directory: the keys path must be absolute
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ChildBot"


# --- threads ----------------------------------------------------------------


def test_a_plain_pool_does_not_carry_the_session_but_ours_does() -> None:
    with Agent("Submitter", ["read:orders"]).start_session():
        with ThreadPoolExecutor(max_workers=2) as plain:
            assert plain.submit(name_now).result() is None
        with ContextThreadPoolExecutor(max_workers=2) as pool:
            assert pool.submit(read_orders).result() == "Submitter"
            assert list(pool.map(lambda _: read_orders(), range(8))) == ["Submitter"] * 8


def test_each_submitter_gets_its_own_agent_and_workers_keep_none() -> None:
    with ContextThreadPoolExecutor(max_workers=2) as pool:
        with Agent("A", ["read:orders"]).start_session():
            a = [pool.submit(read_orders) for _ in range(10)]
        with Agent("B", ["read:orders"]).start_session():
            b = [pool.submit(read_orders) for _ in range(10)]
        after = [pool.submit(name_now).result() for _ in range(4)]
    assert {f.result() for f in a} == {"A"} and {f.result() for f in b} == {"B"}
    assert after == [None] * 4  # nothing sticks to the worker threads


def test_copy_session_captures_when_wrapped_not_when_called() -> None:
    with Agent("Wrapper", ["read:orders"]).start_session():
        bound = copy_session(read_orders)
    with Agent("Caller", ["read:orders"]).start_session():
        assert bound() == "Wrapper"
    assert bound.__name__ == "read_orders"


def test_copy_session_for_a_thread_and_for_many_threads_at_once() -> None:
    results: list[str] = []
    with Agent("Spawner", ["read:orders"]).start_session():
        thread = threading.Thread(target=copy_session(lambda: results.append(read_orders())))
        bound = copy_session(read_orders)
    thread.start()
    thread.join()
    barrier = threading.Barrier(4)

    def together(_: int) -> str:
        barrier.wait(timeout=5)  # four threads inside the same wrapped function at once
        return bound()

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(together, range(4))) == ["Spawner"] * 4
    assert results == ["Spawner"]


def test_copy_session_with_run_in_executor() -> None:
    async def main() -> tuple[str | None, str]:
        loop = asyncio.get_running_loop()
        async with Agent("Async", ["read:orders"]).start_session():
            plain = await loop.run_in_executor(None, name_now)
            copied = await loop.run_in_executor(None, copy_session(read_orders))
        return plain, copied

    assert asyncio.run(main()) == (None, "Async")

"""The state store in the default configuration, across real processes.

No ``AGENTSUDO_STORE``, no explicit verifier: every process works in one
directory whose ``keys/`` holds the key and ``agentsudo-state.db``, as a user
following the README does. These are the regressions of issue 8, items 1-3:
the SQLite store dropping its own POSIX locks (a lost approval, "disk I/O
error"), a long-running process never seeing the state file appear, and a
one-time token accepted by a verifier without a store.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens import Agent, Issuer, KeyDirectory, RevokedTokenError
from agentsudo_tokens.state import STATE_FILE
from agentsudo_tokens.state.sqlite import SqliteStore


@pytest.fixture
def here(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test process itself works in ``workdir`` too (the default ``./keys``)."""
    monkeypatch.chdir(workdir)
    yield workdir


def _spawn(script: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    path = cwd / "agent.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.Popen(
        [sys.executable, str(path)],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- 1. the approval flow exactly as the issue wrote it --------------------------------------


AGENT_PY = """
    from agentsudo_tokens import Agent, current_agent, sudo
    from agentsudo_tokens.guard.elevation import ask

    @sudo(scope="write:refunds", on_deny=ask(timeout=20))
    def refund():
        return "refunded"

    print(refund(), flush=True)
    for _ in range(20):  # later calls use the store again: revocation checks, a fresh verify
        Agent.from_token(current_agent().token)
    print("later calls fine", flush=True)
"""


def test_the_approval_flow_of_the_issue_in_the_default_configuration(workdir: Path) -> None:
    """keys init; revoke (the state file exists); issue; agent waits; approvals; approve."""
    assert sh("revoke", "0" * 32, cwd=workdir).returncode == 0
    assert (workdir / "keys" / STATE_FILE).exists()
    issued = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir)
    assert issued.returncode == 0, issued.stderr
    env = {**os.environ, "AGENTSUDO_TOKEN": issued.stdout.strip()}
    agent = _spawn(AGENT_PY, workdir, env)
    try:
        request_id = None
        deadline = time.monotonic() + 30
        while request_id is None and time.monotonic() < deadline:
            listed = sh("approvals", cwd=workdir)
            assert listed.returncode == 0, listed.stderr
            found = re.search(r"apr_[A-Za-z0-9_-]+", listed.stdout)
            request_id = found.group(0) if found else None
            if request_id is None:
                assert agent.poll() is None, agent.communicate()
                time.sleep(0.1)
        assert request_id is not None, "the request never appeared in `agentsudo approvals`"
        approved = sh("approve", request_id, cwd=workdir)
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith("approved:")
        out, err = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, err
    assert out.splitlines() == ["refunded", "later calls fine"], err
    assert "disk I/O error" not in err


# -- 1. the store keeps its locks: two stores in one process, other processes come and go ----


WRITER = """
import sys
from agentsudo_tokens.state.sqlite import SqliteStore

for line in sys.stdin:
    key = line.strip()
    if not key:
        break
    with SqliteStore(sys.argv[1]) as store:  # opened and closed each round, as a CLI run does
        store.put(key, "v-" + key, expires_at=4e9)
    print("wrote", key, flush=True)
"""


def test_cross_process_writes_are_seen_by_two_stores_in_one_process(tmp_path: Path) -> None:
    """50 rounds: another process writes, both stores of this process read it at once.

    Each round this process also opens and closes a third store on the file (as code
    doing ``with open_store(url) as s:`` does): that must not cost the others their locks.
    """
    path = tmp_path / "state.db"
    first, second = SqliteStore(path), SqliteStore(path)
    first.put("warm", "1", expires_at=4e9)
    assert second.get("warm") == "1"  # both stores hold the file open from here on
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        for round_ in range(50):
            key = f"k{round_}"
            with SqliteStore(path) as transient:
                assert transient.get("warm") == "1"
            writer.stdin.write(key + "\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == f"wrote {key}"
            assert first.get(key) == f"v-{key}", f"round {round_}: the first store missed it"
            assert second.get(key) == f"v-{key}", f"round {round_}: the second store missed it"
            first.put(f"mine{round_}", "1", expires_at=4e9)  # and writing still works
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
        writer.stdout.close()
    assert writer.returncode == 0
    first.close()
    assert second.get("k49") == "v-k49"  # closing one store leaves the other working
    second.close()


def test_the_wal_survives_another_process_coming_and_going(tmp_path: Path) -> None:
    """While this process holds the file, another one's exit must not checkpoint it away."""
    path = tmp_path / "state.db"
    store, other = SqliteStore(path), SqliteStore(path)  # two objects, one connection
    store.put("before", "1", expires_at=4e9)
    assert other.get("before") == "1"
    other.close()  # closing one store must not release what the other holds
    wal = Path(f"{path}-wal")
    assert wal.exists()
    for round_ in range(3):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from agentsudo_tokens.state.sqlite import SqliteStore; "
                "s = SqliteStore(sys.argv[1]); s.put(sys.argv[2], '1', expires_at=4e9); "
                "print(s.get('before')); s.close()",
                str(path),
                f"visitor{round_}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
        assert wal.exists(), f"round {round_}: the -wal file was deleted under a live connection"
        assert store.get(f"visitor{round_}") == "1"
        store.put(f"after{round_}", "1", expires_at=4e9)
        assert store.get(f"after{round_}") == "1"
    store.close()


def test_a_symlink_in_place_of_the_state_file_is_refused(tmp_path: Path) -> None:
    from agentsudo_tokens.errors import StoreUnavailableError

    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    (tmp_path / "state.db").symlink_to(target)
    with pytest.raises(StoreUnavailableError, match="not a regular file"):
        SqliteStore(tmp_path / "state.db").put("k", "v", expires_at=4e9)


def test_a_new_state_file_is_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("k", "v", expires_at=4e9)
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    store.close()


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("parent", "1", expires_at=4e9)
    pid = os.fork()
    if pid == 0:  # the child: its own connection, the parent's left alone
        code = 1
        try:
            store.put("child", "1", expires_at=4e9)
            code = 0 if store.get("parent") == "1" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("child") == "1"
    store.put("parent-again", "1", expires_at=4e9)
    store.close()


# -- 2. a long-running process sees the state file appear ---------------------------------


LONG_RUNNING = """
import sys
from agentsudo_tokens import Agent
from agentsudo_tokens.errors import AgentSudoError

token = sys.argv[1]
print("started", flush=True)
for line in sys.stdin:
    try:
        Agent.from_token(token)
        print("accepted", flush=True)
    except AgentSudoError as exc:
        print("refused", type(exc).__name__, flush=True)
"""


def _ask(process: subprocess.Popen[str]) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("again\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def _until_refused(process: subprocess.Popen[str], allowed: str = "orders") -> str:
    """Ask until the answer is no longer ``allowed`` (10 s at most); that answer."""
    answer, deadline = _ask(process), time.monotonic() + 10
    while answer == allowed and time.monotonic() < deadline:
        time.sleep(0.1)  # cached tokens and the ambient token are rechecked once a second
        answer = _ask(process)
    return answer


def _long_running(workdir: Path, token: str) -> subprocess.Popen[str]:
    """LONG_RUNNING started in ``workdir``, once it says so."""
    (workdir / "service.py").write_text(LONG_RUNNING)
    service = subprocess.Popen(
        [sys.executable, "service.py", token],
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert service.stdout is not None and service.stdout.readline().strip() == "started"
    return service


def test_a_running_process_honours_a_revocation_made_after_it_started(workdir: Path) -> None:
    """No state file when the process starts; `agentsudo revoke` later; refused within seconds."""
    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
    assert not (workdir / "keys" / STATE_FILE).exists()
    service = _long_running(workdir, token)
    try:
        assert _ask(service) == "accepted"
        assert _ask(service) == "accepted"
        assert sh("revoke", token, cwd=workdir).returncode == 0
        assert sh("verify", token, cwd=workdir).returncode == 1
        assert _until_refused(service, "accepted") == "refused RevokedTokenError"
        assert _ask(service) == "refused RevokedTokenError"  # and stays refused
    finally:
        service.kill()
        service.communicate()


def test_the_same_process_sees_its_own_revocation_at_once(here: Path) -> None:
    from agentsudo_tokens.config import Settings
    from agentsudo_tokens.state import open_settings_store
    from agentsudo_tokens.tokens.revocation import revoke_token

    issuer = Issuer(KeyDirectory(here / "keys").signing_key())
    token = issuer.issue("S", "read:orders").token
    assert Agent.from_token(token).name == "S"  # no state file yet
    with open_settings_store(Settings.from_env()) as store:
        revoke_token(store, token)
    with pytest.raises(RevokedTokenError):
        Agent.from_token(token)  # no wait: a write in this process invalidates the cache


def test_a_one_time_token_is_used_once_across_processes_by_default(here: Path) -> None:
    """`issue --once`, then the default verifier of two separate `agentsudo verify` runs."""
    token = sh("issue", "--agent", "D", "--scopes", "deploy:prod", "--once", cwd=here)
    assert token.returncode == 0, token.stderr
    first = sh("verify", token.stdout.strip(), cwd=here)
    second = sh("verify", token.stdout.strip(), cwd=here)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1 and "already used" in second.stderr
    with pytest.raises(RevokedTokenError, match="already used"):
        Agent.from_token(token.stdout.strip())


def test_a_service_with_only_the_jwks_verifies_and_creates_no_state(workdir: Path) -> None:
    """A verifier somewhere without a key directory: plain tokens verify, nothing is written."""
    elsewhere = workdir / "service"
    elsewhere.mkdir()
    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
    env = {**os.environ, "AGENTSUDO_JWKS": str(workdir / "keys" / "jwks.json")}
    done = sh("verify", token, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert list(elsewhere.iterdir()) == []


AMBIENT_AGENT = """
import sys
from agentsudo_tokens import sudo
from agentsudo_tokens.errors import AgentSudoError

@sudo(scope="read:orders")
def read_orders():
    return "orders"

print("started", flush=True)
for line in sys.stdin:
    try:
        print(read_orders(), flush=True)
    except AgentSudoError as exc:
        print("refused", type(exc).__name__, flush=True)
"""


@pytest.mark.parametrize("how", ["jti", "token", "agent"])
def test_a_running_agent_process_loses_its_ambient_token_when_revoked(
    workdir: Path, how: str
) -> None:
    """`agentsudo run` starts a long-running agent in another directory; revoke reaches it."""
    elsewhere = workdir / "somewhere-else"
    elsewhere.mkdir()
    (elsewhere / "agent.py").write_text(AMBIENT_AGENT)
    agent = subprocess.Popen(
        [AGENTSUDO, "run", "--agent", "Reporter", "--scopes", "read:orders", "--keys-dir",
         str(workdir / "keys"), "--", sys.executable, "-c",
         "import os, sys; os.chdir(sys.argv[1]); exec(open('agent.py').read())", str(elsewhere)],
        cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "started"
        assert _ask(agent) == "orders"
        # the child's token is in its environment only: read it from /proc, as root could
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
        child = children[0]
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        found = [v for v in environ if v.startswith(b"AGENTSUDO_TOKEN=")]
        value = found[0].split(b"=", 1)[1].decode()
        assert all(not v.startswith(b"AGENTSUDO_KEYS_DIR=") for v in environ)
        if how == "jti":
            from agentsudo_tokens import decode_unverified

            target = ["revoke", str(decode_unverified(value).claims["jti"])]
        elif how == "token":
            target = ["revoke", value]
        else:
            target = ["revoke", "--agent", "Reporter"]
        assert sh(*target, cwd=workdir).returncode == 0
        assert _until_refused(agent) == "refused PermissionDeniedError"
        assert _ask(agent) == "refused PermissionDeniedError"  # and stays refused
    finally:
        agent.kill()
        agent.communicate()


SERVICE_PY = """
import socket, sys, uvicorn
from typing import Annotated
from fastapi import Depends, FastAPI
from agentsudo_tokens import Agent
from agentsudo_tokens.integrations.fastapi import require_scope

app = FastAPI()

@app.get("/orders")
def orders(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> dict:
    return {"agent": agent.name}

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(64)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


def test_a_fastapi_service_started_before_any_state_honours_revocation_and_once(
    workdir: Path,
) -> None:
    """The service starts with no state file; later `revoke` and `--once` reach it, unrestarted."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    assert not (workdir / "keys" / STATE_FILE).exists()
    (workdir / "service.py").write_text(SERVICE_PY)
    service = subprocess.Popen(
        [sys.executable, "service.py"], cwd=workdir, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        port = service.stdout.readline().strip()
        assert port.isdigit(), "the service did not start"

        def get(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.get(f"http://127.0.0.1:{port}/orders", headers=headers).status_code

        token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
        assert get(token) == 200 and get(token) == 200
        assert sh("revoke", token, cwd=workdir).returncode == 0
        status, deadline = get(token), time.monotonic() + 10
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = get(token)
        assert status == 401
        once = sh("issue", "--agent", "S", "--scopes", "read:orders", "--once", cwd=workdir)
        once_token = once.stdout.strip()
        assert [get(once_token) for _ in range(3)] == [200, 401, 401]
    finally:
        service.terminate()
        service.communicate(timeout=30)


# -- the store's file: forks, resets, and files others could have written ------------------


DAEMON = """
import os, sys
from agentsudo_tokens.state.sqlite import SqliteStore

store = SqliteStore(sys.argv[1])
store.put("parent", "1", expires_at=4e9)      # the parent holds the file open, then forks
if os.fork():
    os._exit(0)                                 # and goes away, as a daemonizing process does
print("child", flush=True)
for line in sys.stdin:
    key = line.strip()
    print(store.get(key), os.path.exists(sys.argv[1] + "-wal"), flush=True)
"""


def test_a_forked_child_keeps_real_locks_after_its_parent_is_gone(tmp_path: Path) -> None:
    """The child's connection must hold its own POSIX locks, or a visitor deletes the WAL."""
    path = tmp_path / "state.db"
    (tmp_path / "daemon.py").write_text(DAEMON)
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / "daemon.py"), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "child"
        child.wait(timeout=30)  # the parent exited; the forked child goes on, reading stdin
        child.stdin.write("parent\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["1", "True"]
        for round_ in range(5):  # visitors come and go, as `agentsudo revoke` runs would
            visit = (
                "import sys; from agentsudo_tokens.state.sqlite import SqliteStore; "
                "s = SqliteStore(sys.argv[1]); s.put(sys.argv[2], 'v', expires_at=4e9); s.close()"
            )
            subprocess.run([sys.executable, "-c", visit, str(path), f"k{round_}"], check=True)
            child.stdin.write(f"k{round_}\n")
            child.stdin.flush()
            assert child.stdout.readline().split() == ["v", "True"], f"round {round_}"
    finally:
        child.stdin.close()
        child.stdout.close()


def test_a_state_file_made_anew_is_seen_by_a_running_verifier(workdir: Path) -> None:
    """`rm keys/agentsudo-state.db*` then a revoke: the running process follows the new file."""
    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
    assert sh("revoke", "0" * 32, cwd=workdir).returncode == 0  # the file exists
    service = _long_running(workdir, token)
    try:
        assert _ask(service) == "accepted"
        for leftover in (workdir / "keys").glob(f"{STATE_FILE}*"):
            leftover.unlink()  # a reset, while the service runs
        assert sh("revoke", token, cwd=workdir).returncode == 0
        assert _until_refused(service, "accepted") == "refused RevokedTokenError"
    finally:
        service.kill()
        service.communicate()


def _planted(path: Path, statement: str) -> None:
    """Another hand's edit, made outside this process (a second connection here costs locks)."""
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(path), statement], check=True)


def test_a_state_file_with_a_planted_trigger_is_refused(tmp_path: Path) -> None:
    """A trigger that forgets every use of a one-time token must not be obeyed."""
    from agentsudo_tokens.errors import StoreUnavailableError

    path = tmp_path / "state.db"
    SqliteStore(path).close()
    with SqliteStore(path) as first:
        first.put("k", "v", expires_at=4e9)
    _planted(
        path,
        "CREATE TRIGGER forget AFTER INSERT ON entries WHEN new.key LIKE 'used:%' "
        "BEGIN DELETE FROM entries WHERE key = new.key; END;",
    )
    with pytest.raises(StoreUnavailableError, match="trigger 'forget'"):
        SqliteStore(path).add("used:x", "1", expires_at=4e9)


@pytest.mark.parametrize(
    "setup",
    ["file-0666", "file-0620", "dir-0777", "dir-0770", "hard-link"],
)
def test_a_state_file_others_could_write_is_refused(tmp_path: Path, setup: str) -> None:
    from agentsudo_tokens.errors import StoreUnavailableError

    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    path = directory / STATE_FILE
    with SqliteStore(path) as store:
        store.put("k", "v", expires_at=4e9)
    kind, _, mode = setup.partition("-")
    if kind == "file":
        path.chmod(int(mode, 8))
    elif kind == "dir":
        directory.chmod(int(mode, 8))
    else:
        os.link(path, tmp_path / "elsewhere.db")
    with pytest.raises(StoreUnavailableError, match="refusing it"):
        SqliteStore(path).get("k")
    with pytest.raises(StoreUnavailableError, match="refusing it"):
        SqliteStore(path, create=False).get("k")  # a verifier's reader too: fail closed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    from agentsudo_tokens.errors import StoreUnavailableError

    path = tmp_path / "state.db"
    with SqliteStore(path) as store:
        store.put("k", "v", expires_at=4e9)
    os.chown(path, 65534, 65534)  # nobody
    with pytest.raises(StoreUnavailableError, match="belongs to uid 65534"):
        SqliteStore(path).get("k")


def test_a_service_told_where_the_issuers_state_is_shares_it(workdir: Path) -> None:
    """A service elsewhere: AGENTSUDO_JWKS and AGENTSUDO_STORE at the issuer's, as documented."""
    service = workdir / "service"
    service.mkdir()
    assert sh("keys", "init", cwd=service).returncode == 0  # its own keys/, unused here
    keys = workdir / "keys"
    env = {
        **os.environ,
        "AGENTSUDO_JWKS": str(keys / "jwks.json"),
        "AGENTSUDO_STORE": f"sqlite:///{keys / STATE_FILE}",
    }
    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
    assert sh("verify", token, cwd=service, env=env).returncode == 0
    assert sh("revoke", token, cwd=workdir).returncode == 0  # the issuer revokes, at home
    refused = sh("verify", token, cwd=service, env=env)
    assert refused.returncode == 1 and "was revoked" in refused.stderr
    once = sh("issue", "--agent", "S", "--scopes", "read:orders", "--once", cwd=workdir)
    assert sh("verify", once.stdout.strip(), cwd=service, env=env).returncode == 0
    again = sh("verify", once.stdout.strip(), cwd=workdir)  # at the issuer: already used
    assert again.returncode == 1 and "already used" in again.stderr


def test_the_keys_dir_flag_decides_where_a_revocation_goes(workdir: Path) -> None:
    """`--keys-dir` beats AGENTSUDO_JWKS: the revocation lands in that key directory."""
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "AGENTSUDO_JWKS": str(elsewhere / "jwks.json")}
    done = sh("revoke", "--keys-dir", str(workdir / "keys"), "--agent", "Foo", cwd=workdir, env=env)
    assert done.returncode == 0 and str(workdir / "keys" / STATE_FILE) in done.stdout
    assert not (elsewhere / STATE_FILE).exists()


PARENT = """
import subprocess, sys
from agentsudo_tokens import Agent, current_agent
from agentsudo_tokens.guard.propagation import agent_env

with Agent.from_token(sys.argv[1]).start_session():
    env = agent_env()
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[2]], cwd=sys.argv[3], env=env,
    stdin=sys.stdin, stdout=sys.stdout,
)
sys.exit(child.wait())
"""


def test_a_child_started_with_agent_env_sees_revocations_from_any_directory(
    workdir: Path,
) -> None:
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
    (workdir / "parent.py").write_text(PARENT)
    child = subprocess.Popen(
        [sys.executable, "parent.py", token, AMBIENT_AGENT, str(elsewhere)],
        cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        assert _ask(child) == "orders"
        assert sh("revoke", token, cwd=workdir).returncode == 0
        assert _until_refused(child) == "refused PermissionDeniedError"
    finally:
        child.kill()
        child.communicate()


GC_WHILE_CONNECTING = """
import gc, sys
from pathlib import Path
from agentsudo_tokens.state.sqlite import SqliteStore

root = Path(sys.argv[1])
gc.set_threshold(1)  # the cyclic collector runs at nearly every allocation, inside our locks too
for i in range(60):
    lost = SqliteStore(root / "a.db")
    lost.get("x")
    lost.cycle = lost  # only the cyclic collector can free it: at any moment, in any lock
    del lost
    other = SqliteStore(root / f"b{i % 3}.db")
    other.put("k", "v", expires_at=4e9)
    other.close()
print("done")
"""


def test_a_store_collected_while_another_connects_does_not_deadlock(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", GC_WHILE_CONNECTING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr


# -- sessions that outlive a revocation -------------------------------------------------------


def test_a_live_session_is_refused_within_seconds_of_a_revocation(here: Path) -> None:
    """`with Agent.from_token(t).start_session():` in a long loop; `agentsudo revoke` elsewhere."""
    from agentsudo_tokens import PermissionDeniedError, sudo

    @sudo(scope="read:orders")
    def read_orders() -> str:
        return "orders"

    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=here).stdout.strip()
    with Agent.from_token(token).start_session() as agent:
        assert read_orders() == "orders"
        assert sh("revoke", token, cwd=here).returncode == 0  # another process
        deadline = time.monotonic() + 10
        with pytest.raises(PermissionDeniedError, match="refused after its session began"):
            while time.monotonic() < deadline:
                read_orders()
                time.sleep(0.05)
        with pytest.raises(PermissionDeniedError):
            read_orders()  # and it stays refused
        assert agent.name == "S"


STREAMING_SERVICE = """
import asyncio, socket, uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from agentsudo_tokens import PermissionDeniedError, sudo
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware

@sudo(scope="read:orders")
def next_order(n):
    return f"order {n}"

app = FastAPI()
app.add_middleware(AgentSudoMiddleware)

@app.get("/stream")
async def stream():
    async def lines():
        for n in range(200):
            try:
                yield next_order(n) + "\\n"
            except PermissionDeniedError:
                yield "refused\\n"
                return
            await asyncio.sleep(0.05)
    return StreamingResponse(lines(), media_type="text/plain")

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(64)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


def test_a_stream_opened_by_the_middleware_stops_after_a_revocation(workdir: Path) -> None:
    """The middleware's session lasts as long as the response: revocation must reach it."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    (workdir / "service.py").write_text(STREAMING_SERVICE)
    service = subprocess.Popen(
        [sys.executable, "service.py"], cwd=workdir, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        port = service.stdout.readline().strip()
        assert port.isdigit(), "the service did not start"
        token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        seen: list[str] = []
        with httpx.stream(
            "GET", f"http://127.0.0.1:{port}/stream", headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                seen.append(line)
                if len(seen) == 3:
                    assert sh("revoke", token, cwd=workdir).returncode == 0
        assert seen[:3] == ["order 0", "order 1", "order 2"]
        assert seen[-1] == "refused"  # within seconds, not after 200 orders
        assert len(seen) < 150
    finally:
        service.terminate()
        service.communicate(timeout=30)


FORK_WHILE_BUSY = """
import os, sys, threading, time
from pathlib import Path
from agentsudo_tokens import Agent, Issuer, KeyDirectory
from agentsudo_tokens.state.sqlite import SqliteStore

root = Path(sys.argv[1])
os.environ["AGENTSUDO_KEYS_DIR"] = str(root / "keys")
keys = KeyDirectory.init(root / "keys")
issuer = Issuer(keys.signing_key())
tokens = [issuer.issue("S", "read:orders").token for _ in range(50)]
store = SqliteStore(root / "keys" / "agentsudo-state.db")
store.put("k", "v", expires_at=4e9)
# Warm up first, as a program does before it forks: a module a thread is importing while
# another forks keeps its import lock in the child (CPython does not reset it), which no
# library can undo; the locks this test is about are ours.
Agent.from_token(tokens[0])
stop = threading.Event()
errors = []

def busy():
    n = 0
    while not stop.is_set():
        try:
            store.get("k")
            Agent.from_token(tokens[n % len(tokens)])
        except Exception as exc:  # a valid token refused while another thread forks
            errors.append(repr(exc))
        n += 1

threads = [threading.Thread(target=busy) for _ in range(3)]
for thread in threads:
    thread.start()
hung = 0
for _ in range(60):
    pid = os.fork()
    if pid == 0:  # the child: the same objects, with locks the parent's threads may have held
        ok = store.get("k") == "v" and Agent.from_token(tokens[0]).name == "S"
        os._exit(0 if ok else 3)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, status
            break
        if time.monotonic() > deadline:
            hung += 1
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
stop.set()
for thread in threads:
    thread.join()
print("hung", hung, "errors", len(errors), errors[:1])
"""


def test_forking_while_other_threads_use_the_store_neither_hangs_nor_refuses(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORK_WHILE_BUSY, str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hung 0 errors 0 []", done.stdout


def _request_id(workdir: Path, agent: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = sh("approvals", cwd=workdir)
        found = re.search(r"apr_[A-Za-z0-9_-]+", listed.stdout)
        if found:
            return found.group(0)
        assert agent.poll() is None, agent.communicate()
        time.sleep(0.1)
    raise AssertionError("the request never appeared in `agentsudo approvals`")


@pytest.mark.parametrize("how", ["token", "agent"])
def test_an_approval_that_comes_after_a_revocation_runs_nothing(workdir: Path, how: str) -> None:
    """Revoked while waiting for a human: the approval must not release the call."""
    token = sh("issue", "--agent", "S", "--scopes", "read:orders", cwd=workdir).stdout.strip()
    script = (
        "from agentsudo_tokens import sudo\n"
        "from agentsudo_tokens.guard.elevation import ask\n"
        "@sudo(scope='write:refunds', on_deny=ask(timeout=30, poll_interval=0.05))\n"
        "def refund():\n"
        "    return 'REFUND RAN'\n"
        "try:\n"
        "    print(refund(), flush=True)\n"
        "except PermissionError as exc:\n"
        "    print('refused:', exc, flush=True)\n"
    )
    agent = _spawn(script, workdir, {**os.environ, "AGENTSUDO_TOKEN": token})
    try:
        request_id = _request_id(workdir, agent)
        target = [token] if how == "token" else ["--agent", "S"]
        assert sh("revoke", *target, cwd=workdir).returncode == 0
        assert sh("approve", request_id, cwd=workdir).returncode == 0
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert "REFUND RAN" not in out
    assert out.startswith("refused:") and "approved, but its token is refused" in out, out + err

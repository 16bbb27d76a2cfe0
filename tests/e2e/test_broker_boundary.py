"""The broker is a boundary between OS users (issue 9 part 10): tested with real users.

As root, this module creates two system users (if missing), runs ``agentsudo serve``
as ``agentsudo-broker`` with a key directory and a state store only that user can
open, and runs the agent's attempts as ``agentsudo-agent`` (``subprocess`` with
``user=``/``group=``/``extra_groups=[]``): it obtains what the policy grants, and
nothing else. Root is the broker's admin (``uid:0``).

Code run as another user cannot reach a Python that lives under ``/root`` (CI's
venv may be built on one), so the project is installed for these users on the
system Python (``/usr/bin/python3``), in world-readable places:

- ``/opt/agentsudo-test-venv``: a venv with the dependencies only, made once and
  reused while ``pyproject.toml``'s dependencies and the system Python stay the
  same (CI, starting fresh, makes it; a file lock keeps concurrent sessions apart);
- per test session, the working tree's code installed non-editably (``pip install
  --no-deps --target``) into a temporary directory of this session, so concurrent
  sessions on a changing working tree never swap each other's code mid-run.

Nothing is written into the repository: the source is copied out before building.
Without root these tests skip, saying so; CI runs as root and runs them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentsudo_tokens import KeySet, Verifier
from agentsudo_tokens.errors import RevokedTokenError

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="the OS-user boundary tests create users and run processes as them: run as root "
    "(CI does)",
)

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
DEPS_VENV = Path("/opt/agentsudo-test-venv")
DEPS_LOCK = Path("/opt/agentsudo-test-venv.lock")
BROKER_USER = "agentsudo-broker"
AGENT_USER = "agentsudo-agent"
SLOW = 180  # seconds any one subprocess may take on a loaded machine before the test fails

POLICY = f"""
[broker]
admins = ["uid:0"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
max_ttl = "15m"
callers = ["user:{AGENT_USER}"]

[agents.BillingBot]
scopes = ["write:refunds"]
callers = ["uid:0"]
"""


# --- the installation the other users run ----------------------------------------------


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run as root with a world-readable umask; fail with the command's output."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, umask=0o022, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv[:6])} ... failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def _deps_key(pyproject: dict) -> tuple[str, list[str]]:
    """What the dependency venv holds, and a key that changes when that should change."""
    wanted = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["broker"],
        *pyproject["build-system"]["requires"],
    ]
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version)"],
        capture_output=True, text=True, timeout=SLOW, check=True,
    ).stdout  # fmt: skip
    key = hashlib.sha256(json.dumps([wanted, version, 1]).encode()).hexdigest()
    return key, wanted


def _dependency_venv() -> Path:
    """``/opt/agentsudo-test-venv`` on the system Python, with the dependencies, made once."""
    if not SYSTEM_PYTHON.exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing: the other users need a Python outside /root")
    key, wanted = _deps_key(tomllib.loads((REPO / "pyproject.toml").read_text()))
    marker = DEPS_VENV / ".agentsudo-deps"
    with open(DEPS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (marker.exists() and marker.read_text() == key):
                shutil.rmtree(DEPS_VENV, ignore_errors=True)
                _run([str(SYSTEM_PYTHON), "-m", "venv", str(DEPS_VENV)])
                _run([str(DEPS_VENV / "bin/python"), "-m", "pip", "install", "-q", *wanted])
                marker.write_text(key)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return DEPS_VENV


def _install_project(target: Path) -> Path:
    """The working tree's code installed (not editable) into ``target``; its ``bin/agentsudo``."""
    source = target / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir(parents=True)
    target.chmod(0o755)  # whatever root's umask: the other users run what is installed here
    shutil.copy2(REPO / "pyproject.toml", source)
    shutil.copy2(REPO / "README.md", source)
    shutil.copytree(REPO / "agentsudo_tokens", source / "agentsudo_tokens", ignore=ignore)
    shutil.copytree(REPO / "cli", source / "cli", ignore=ignore)
    site = target / "site"
    venv_python = _dependency_venv() / "bin/python"
    _run([str(venv_python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "--target", str(site), str(source)])  # fmt: skip
    shutil.rmtree(source)
    return site


# --- users and processes ----------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def _system_user(name: str) -> User:
    """The system user ``name``, created if missing (no home, no login shell)."""
    with open(DEPS_LOCK, "a") as lock:  # concurrent sessions: one useradd
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
                _run(["useradd", "--system", "--no-create-home", "--shell", shell, name])
                entry = pwd.getpwnam(name)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert entry.pw_uid != 0
    return User(name, entry.pw_uid, entry.pw_gid)


@dataclass
class Boundary:
    """The broker running as its user; helpers to act as the agent's user or as root."""

    base: Path
    site: Path
    broker_user: User
    agent_user: User
    keys: Path
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def python(self) -> str:
        return str(DEPS_VENV / "bin/python")

    @property
    def agentsudo(self) -> str:
        return str(self.site / "bin/agentsudo")

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A clean environment: nothing of root's (no AGENTSUDO_* of the test run)."""
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.site),
            "PYTHONDONTWRITEBYTECODE": "1",
            **extra,
        }

    def as_agent(self, *argv: str, broker: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the agent's user, in its own directory, told the broker's address."""
        home = self.base / "agent"
        extra = {"AGENTSUDO_BROKER": self.address} if broker else {}
        return subprocess.run(
            list(argv), user=self.agent_user.uid, group=self.agent_user.gid, extra_groups=[],
            cwd=home, env=self.env(home, **extra), capture_output=True, text=True, timeout=SLOW,
        )  # fmt: skip

    def agent_python(self, code: str, *args: str) -> dict:
        """Run ``code`` as the agent's user; it prints one JSON object, returned here."""
        done = self.as_agent(self.python, "-c", code, *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def as_root(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run the installed ``agentsudo`` as root (the broker's admin), told the broker."""
        home = self.base / "root"
        return subprocess.run(
            [self.agentsudo, *argv], cwd=home, env=self.env(home, AGENTSUDO_BROKER=self.address),
            capture_output=True, text=True, timeout=SLOW,
        )  # fmt: skip

    def jwks(self) -> dict:
        from agentsudo_tokens.broker.client import BrokerClient

        return BrokerClient(self.address, timeout=SLOW).jwks()

    def verifier(self, *, revocations: bool = False) -> Verifier:
        """A verifier trusting the broker's JWKS alone (and its revocation list if asked)."""
        keys = KeySet.from_dict(self.jwks())
        if not revocations:
            return Verifier(keys, cache_size=0)
        from agentsudo_tokens.tokens.revocation_list import RevocationListSource

        source = RevocationListSource(self.address, keys, refresh=0.001, timeout=SLOW)
        return Verifier(keys, cache_size=0, revocations=source)


def _start_broker(base: Path, site: Path, broker_user: User, agent_user: User) -> Boundary:
    home = base / "broker"  # the broker's: keys, store, policy; 0700
    run = base / "run"  # the socket's directory: anyone may reach the socket
    owned = [
        (home, broker_user, 0o700),
        (run, broker_user, 0o755),
        (base / "agent", agent_user, 0o700),
        (base / "root", None, 0o700),
    ]
    for path, owner, mode in owned:
        path.mkdir()
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
        path.chmod(mode)
    policy = home / "agentsudo.toml"
    policy.write_text(POLICY)
    os.chown(policy, broker_user.uid, broker_user.gid)
    policy.chmod(0o600)
    keys = home / "keys"
    log = base / "broker.log"
    boundary = Boundary(
        base,
        site,
        broker_user,
        agent_user,
        keys,
        run / "broker.sock",
        None,
        log,  # type: ignore[arg-type]
    )
    as_broker = {"user": broker_user.uid, "group": broker_user.gid, "extra_groups": []}
    init = subprocess.run(
        [boundary.agentsudo, "keys", "init", "--keys-dir", str(keys)], cwd=home,
        env=boundary.env(home), capture_output=True, text=True, timeout=SLOW, **as_broker,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    with open(log, "wb") as sink:
        boundary.process = subprocess.Popen(
            [boundary.agentsudo, "serve", "--policy", str(policy), "--keys-dir", str(keys),
             "--socket", str(boundary.socket)],
            cwd=home, env=boundary.env(home), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            **as_broker,
        )  # fmt: skip
    deadline = time.monotonic() + SLOW
    while "listening on" not in log.read_text(errors="replace"):
        if boundary.process.poll() is not None or time.monotonic() > deadline:
            _stop(boundary.process)
            pytest.fail(f"the broker did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return boundary


def _stop(process: subprocess.Popen[bytes]) -> int:
    """End the broker we started (by its pid): SIGTERM, then SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=60)
    return int(process.returncode)


@pytest.fixture(scope="module")
def boundary() -> Iterator[Boundary]:
    """Users, the installation, and a running broker, for this module; all gone after it."""
    pytest.importorskip("uvicorn")
    broker_user, agent_user = _system_user(BROKER_USER), _system_user(AGENT_USER)
    base = Path(tempfile.mkdtemp(prefix="agentsudo-boundary-", dir="/tmp"))
    try:
        base.chmod(0o755)  # the other users traverse it; each keeps its own directory
        site = _install_project(base / "install")
        with open(DEPS_LOCK, "a") as in_use:  # no other session rebuilds the venv meanwhile
            fcntl.flock(in_use, fcntl.LOCK_SH)
            running = _start_broker(base, site, broker_user, agent_user)
            try:
                yield running
            finally:
                code = _stop(running.process)
                assert code == 0, running.log.read_text(errors="replace")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _store_files(boundary: Boundary) -> list[Path]:
    """The broker's state store files, made if need be (reading the revocation list opens it)."""
    boundary.verifier(revocations=True).verify(_agent_token(boundary))
    files = sorted(boundary.keys.glob("agentsudo-state*"))
    assert files, sorted(boundary.keys.iterdir())
    return files


# --- what the agent's user can do, and cannot -------------------------------------------

ISSUE = """
import json, sys
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.errors import AgentSudoError
client = BrokerClient(sys.argv[1])
try:
    minted = client.issue(sys.argv[2], scopes=json.loads(sys.argv[3]))
except AgentSudoError as exc:
    print(json.dumps({"refused": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps(minted))
"""


def _agent_token(boundary: Boundary) -> str:
    minted = boundary.agent_python(ISSUE, boundary.address, "SupportBot", "null")
    assert "token" in minted, minted
    return str(minted["token"])


def test_the_broker_runs_as_its_own_user_and_the_agent_as_another(boundary: Boundary) -> None:
    assert boundary.broker_user.uid != boundary.agent_user.uid
    status = Path(f"/proc/{boundary.process.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(boundary.broker_user.uid)}  # real, effective, saved, fs
    whoami = boundary.agent_python(
        "import json, os; print(json.dumps([os.getuid(), os.getgroups()]))"
    )
    assert whoami == [boundary.agent_user.uid, []]
    assert oct(boundary.socket.stat().st_mode & 0o777) == "0o666"


def test_the_agent_obtains_its_token_through_the_broker_and_it_verifies(
    boundary: Boundary,
) -> None:
    minted = boundary.agent_python(ISSUE, boundary.address, "SupportBot", '["read:orders"]')
    assert minted["agent"] == "SupportBot" and minted["scopes"] == ["read:orders"]
    claims = boundary.verifier(revocations=True).verify(minted["token"])
    assert claims.subject == "SupportBot" and list(claims.scopes.scopes) == ["read:orders"]


def test_the_agent_obtains_its_token_with_the_cli(boundary: Boundary) -> None:
    done = boundary.as_agent(boundary.agentsudo, "issue", "--agent", "SupportBot")
    assert done.returncode == 0, done.stderr
    claims = boundary.verifier().verify(done.stdout.strip())
    assert claims.subject == "SupportBot" and list(claims.scopes.scopes) == ["read:orders"]


OPEN = """
import errno, json, os, sys
results = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        results[path] = "read"
    except PermissionError as exc:
        results[path] = errno.errorcode[exc.errno]
    except OSError as exc:
        results[path] = "other: " + errno.errorcode.get(exc.errno or 0, str(exc))
print(json.dumps(results))
"""


def test_the_agent_cannot_read_the_keys_or_the_state(boundary: Boundary) -> None:
    stores = _store_files(boundary)
    files = sorted(path for path in boundary.keys.rglob("*") if path.is_file())
    assert [path for path in files if path.suffix == ".pem"] and stores, files
    for path in [boundary.keys, *files]:
        assert path.stat().st_uid == boundary.broker_user.uid, path
    targets = [boundary.keys, *files, boundary.keys.parent, boundary.keys.parent / "agentsudo.toml"]
    results = boundary.agent_python(OPEN, *map(str, targets))
    assert results == {str(path): "EACCES" for path in targets}
    # nor through the broker process: its memory, environment and open files
    proc = [f"/proc/{boundary.process.pid}/{name}" for name in ("mem", "environ", "fd")]
    results = boundary.agent_python(OPEN, *proc)
    assert set(results.values()) == {"EACCES"}, results


MINT = """
import json, sys
from agentsudo_tokens import Issuer, SigningKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
mine = SigningKey.generate()
posing = SigningKey.from_object(Ed25519PrivateKey.generate(), kid=sys.argv[1])
print(json.dumps({
    "own-key": Issuer(mine).issue("SupportBot", ["**"]).token,
    "posing-as-the-broker's-kid": Issuer(posing).issue("SupportBot", ["**"]).token,
}))
"""


def test_the_agent_cannot_mint_a_token_a_verifier_accepts(boundary: Boundary) -> None:
    from agentsudo_tokens.errors import BadSignatureError, UnknownKeyError

    kid = boundary.jwks()["keys"][0]["kid"]
    forged = boundary.agent_python(MINT, kid)
    verifier = boundary.verifier()
    with pytest.raises(UnknownKeyError):
        verifier.verify(forged["own-key"])
    with pytest.raises(BadSignatureError):
        verifier.verify(forged["posing-as-the-broker's-kid"])


@pytest.mark.parametrize(
    ("agent", "scopes", "named"),
    [
        ("SupportBot", '["read:orders", "write:refunds"]', "write:refunds"),
        ("SupportBot", '["**"]', "**"),
        ("BillingBot", "null", "BillingBot"),
        ("NoSuchBot", "null", "NoSuchBot"),
    ],
    ids=["beyond-its-scopes", "everything", "another-agent", "unknown-agent"],
)
def test_the_broker_refuses_the_agent_what_the_policy_does_not_grant(
    boundary: Boundary, agent: str, scopes: str, named: str
) -> None:
    answer = boundary.agent_python(ISSUE, boundary.address, agent, scopes)
    assert answer.get("refused") == "PermissionDeniedError", answer
    assert named in answer["message"] and "\n" not in answer["message"]


REVOKE = """
import json, sys
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.errors import AgentSudoError
client = BrokerClient(sys.argv[1])
try:
    client.revoke(agent="SupportBot", reason="the agent tries")
except AgentSudoError as exc:
    print(json.dumps({"refused": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"refused": None}))
"""

RAW = """
import json, socket, sys
method, path = sys.argv[2], sys.argv[3]
body = sys.argv[4].encode()
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.settimeout(60)
    sock.connect(sys.argv[1])
    sock.sendall(
        f"{method} {path} HTTP/1.1\\r\\nHost: broker\\r\\nContent-Type: application/json\\r\\n"
        f"Content-Length: {len(body)}\\r\\nConnection: close\\r\\n\\r\\n".encode() + body
    )
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
head, _, answer = data.partition(b"\\r\\n\\r\\n")
print(json.dumps({"status": int(head.split()[1]), "body": json.loads(answer or b"null")}))
"""


def test_the_agent_cannot_revoke_or_unrevoke(boundary: Boundary) -> None:
    answer = boundary.agent_python(REVOKE, boundary.address)
    assert answer["refused"] == "PermissionDeniedError", answer
    assert "not an admin" in answer["message"]
    for method in ("DELETE", "PUT", "PATCH"):  # no way to take a revocation back
        raw = boundary.agent_python(RAW, str(boundary.socket), method, "/v1/revocations", "{}")
        assert raw["status"] in (403, 404, 405), raw
    store = _store_files(boundary)[0]
    tamper = (
        "import json, sys\nout = {}\n"
        "for how in ('r+b', 'ab'):\n"
        "    try:\n        open(sys.argv[1], how).close(); out[how] = 'written'\n"
        "    except PermissionError: out[how] = 'EACCES'\n"
        "try:\n    import os; os.unlink(sys.argv[1]); out['unlink'] = 'removed'\n"
        "except PermissionError: out['unlink'] = 'EACCES'\n"
        "print(json.dumps(out))"
    )
    assert boundary.agent_python(tamper, str(store)) == dict.fromkeys(
        ("r+b", "ab", "unlink"), "EACCES"
    )


def test_the_agent_cannot_revoke_with_the_cli(boundary: Boundary) -> None:
    done = boundary.as_agent(boundary.agentsudo, "revoke", "--agent", "SupportBot")
    assert done.returncode != 0 and "not an admin" in done.stderr, (done.stdout, done.stderr)


def test_the_agent_cannot_see_or_answer_its_own_request(boundary: Boundary) -> None:
    """The agent files an elevation request (part 5); only an admin may see or answer it."""
    from agentsudo_tokens.state.approvals import canonical_arguments

    asking = {
        "token": _agent_token(boundary),
        "scope": "delete:customer",
        "function": "delete_customer",
        "arguments": canonical_arguments({"customer_id": "c1"}),
    }
    filed = boundary.agent_python(
        RAW, str(boundary.socket), "POST", "/v1/elevations", json.dumps(asking)
    )
    assert filed["status"] == 202, filed
    own = filed["body"]["id"]
    for method, path in [
        ("GET", "/v1/approvals"),
        ("GET", f"/v1/approvals/{own}"),
        ("POST", f"/v1/approvals/{own}/approve"),
        ("POST", f"/v1/approvals/{own}/deny"),
    ]:
        body = "{}" if method == "POST" else ""
        raw = boundary.agent_python(RAW, str(boundary.socket), method, path, body)
        assert raw["status"] == 403 and "not an admin" in raw["body"]["detail"], (path, raw)
    done = boundary.as_agent(boundary.agentsudo, "approve", own)
    assert done.returncode == 1 and "not an admin" in done.stderr, (done.stdout, done.stderr)
    # root, the admin, still finds it waiting, whole, and may answer it
    shown = boundary.as_root("approvals", "show", own, "--json")
    assert shown.returncode == 0, shown.stderr
    request = json.loads(shown.stdout)
    assert request["agent"] == "SupportBot" and request["scope"] == "delete:customer", request
    assert request["arguments_json"] == asking["arguments"]
    waiting = boundary.as_root("approvals", "--json")
    assert waiting.returncode == 0 and own in [r["id"] for r in json.loads(waiting.stdout)]
    done = boundary.as_root("deny", own, "--reason", "boundary test")
    assert done.returncode == 0, done.stderr


def test_the_agent_cannot_touch_the_broker_audit_and_an_edit_is_detected(
    boundary: Boundary,
) -> None:
    """Part 7: the broker's hash-chained audit, beside its keys; ``audit verify`` finds an edit."""
    _agent_token(boundary)  # an issuance: one more event
    written = sorted(path for path in boundary.keys.parent.rglob("*audit*") if path.is_file())
    if not written:
        pytest.skip("part 7 not built: the broker writes no audit file")
    results = boundary.agent_python(OPEN, *map(str, written))
    assert set(results.values()) == {"EACCES"}, results
    tamper = (
        "import json, sys\nout = {}\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n        open(path, 'ab').close(); out[path] = 'written'\n"
        "    except PermissionError: out[path] = 'EACCES'\n"
        "print(json.dumps(out))"
    )
    assert set(boundary.agent_python(tamper, *map(str, written)).values()) == {"EACCES"}
    # root (or whoever got past the boundary) edits a copy; verification says so
    copy = boundary.base / "root" / "broker-audit.jsonl"
    lines = written[0].read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2, lines
    copy.write_bytes(b"".join(lines))
    copy.chmod(0o600)
    good = boundary.as_root("audit", "verify", str(copy))
    assert good.returncode == 0, good.stdout + good.stderr
    first = json.loads(lines[0])
    first["edited"] = True
    copy.write_bytes(json.dumps(first).encode() + b"\n" + b"".join(lines[1:]))
    bad = boundary.as_root("audit", "verify", str(copy))
    assert bad.returncode != 0, bad.stdout + bad.stderr


def test_root_the_admin_revokes_through_the_broker(boundary: Boundary) -> None:
    from agentsudo_tokens.broker.client import BrokerClient

    token = _agent_token(boundary)
    verifier = boundary.verifier(revocations=True)
    claims = verifier.verify(token)
    done = BrokerClient(boundary.address, timeout=SLOW).revoke(jti=claims.jti, reason="test")
    assert done["target"] == claims.jti
    with pytest.raises(RevokedTokenError):
        verifier.verify(token)


def test_root_the_admin_revokes_the_agent_with_the_cli(boundary: Boundary) -> None:
    """Last in this module: the kill switch covers every SupportBot token for a while."""
    token = _agent_token(boundary)
    assert boundary.verifier(revocations=True).verify(token).subject == "SupportBot"
    done = boundary.as_root("revoke", "--agent", "SupportBot", "--reason", "boundary test")
    assert done.returncode == 0, done.stderr
    with pytest.raises(RevokedTokenError):
        boundary.verifier(revocations=True).verify(token)

"""The store interface, on SQLite and on a real Redis: atomic operations, expiry, failing closed."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest_store import free_port, redis_server

from agentsudo_tokens import Agent, Issuer, JwksFile, KeyDirectory, Settings, Verifier
from agentsudo_tokens.errors import ConfigError, StoreUnavailableError
from agentsudo_tokens.guard.decision import ApprovalContext
from agentsudo_tokens.guard.elevation import _Waiting, ask
from agentsudo_tokens.state import (
    STATE_FILE,
    Store,
    default_store_url,
    open_settings_store,
    open_store,
)
from agentsudo_tokens.state.sqlite import SqliteStore
from agentsudo_tokens.tokens.issuer import issue_once
from agentsudo_tokens.tokens.revocation import revoke, revoke_agent

LATER = 3600.0


def _later() -> float:
    return time.time() + LATER


# -- the interface ---------------------------------------------------------------------------


def test_put_get_and_overwrite(store: Store) -> None:
    assert store.get("k") is None
    store.put("k", "one", expires_at=_later())
    assert store.get("k") == "one"
    store.put("k", "two", expires_at=_later())
    assert store.get("k") == "two"
    assert store.get_many(["k", "absent", "k"]) == ["two", None, "two"]
    assert store.get_many([]) == []


def test_add_sets_only_when_absent(store: Store) -> None:
    assert store.add("once", "first", expires_at=_later()) is True
    assert store.add("once", "second", expires_at=_later()) is False
    assert store.get("once") == "first"


def test_take_reads_and_deletes_once(store: Store) -> None:
    store.put("answer", "yes", expires_at=_later())
    assert store.take("answer") == "yes"
    assert store.take("answer") is None
    assert store.get("answer") is None


def test_items_by_prefix_takes_glob_characters_literally(store: Store) -> None:
    for key in ("approval:a", "approval:b", "approvals", "other:x", "ap*:c"):
        store.put(key, key.upper(), expires_at=_later())
    assert store.items("approval:") == {"approval:a": "APPROVAL:A", "approval:b": "APPROVAL:B"}
    assert store.items("ap*:") == {"ap*:c": "AP*:C"}
    assert store.items("nothing:") == {}


def test_keys_and_values_keep_any_text(store: Store) -> None:
    key = "agent-revoked:Bot with spaces, ünïcode and 'quotes'"
    store.put(key, '{"reason": "naïve \\" quote"}', expires_at=_later())
    assert store.get(key) == '{"reason": "naïve \\" quote"}'


def test_add_has_one_winner_among_threads(store: Store) -> None:
    winners: list[int] = []
    barrier = threading.Barrier(16)

    def contender(number: int) -> None:
        barrier.wait()
        if store.add("contested", str(number), expires_at=_later()):
            winners.append(number)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.get("contested") == str(winners[0])


def test_take_has_one_winner_among_threads(store: Store) -> None:
    store.put("prize", "gold", expires_at=_later())
    got: list[str | None] = []
    barrier = threading.Barrier(12)

    def contender() -> None:
        barrier.wait()
        got.append(store.take("prize"))

    threads = [threading.Thread(target=contender) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got.count("gold") == 1 and got.count(None) == 11


# -- expiry ----------------------------------------------------------------------------------


def test_entries_expire(store: Store) -> None:
    soon = time.time() + 0.3
    store.put("short", "v", expires_at=soon)
    assert store.add("short-add", "v", expires_at=soon)
    store.put("long", "v", expires_at=_later())
    assert store.get("short") == "v"
    time.sleep(0.45)
    assert store.get_many(["short", "short-add", "long"]) == [None, None, "v"]
    assert store.take("short") is None
    assert store.items("short") == {}
    assert store.add("short-add", "again", expires_at=_later())  # expired: free to take again
    assert store.get("short-add") == "again"


def test_an_entry_already_expired_is_never_seen(store: Store) -> None:
    store.put("past", "v", expires_at=time.time() - 1)
    assert store.get("past") is None
    assert store.add("past", "new", expires_at=_later())


def test_every_entry_written_has_an_expiry(
    store: Store, store_url: str, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    """What revocation, one-time tokens and approvals write all expire with the token."""
    verifier = Verifier(JwksFile(key_dir.jwks_path), store=store)
    minted = issuer.issue("SupportBot", "read:orders")
    revoke(store, minted.claims["jti"], expires_at=minted.claims["exp"])
    revoke_agent(store, "OtherBot")
    once = issue_once(issuer, store, "DeployBot", "deploy:prod", ttl=60)
    verifier.verify(once.token)  # writes used:<jti>
    context = ApprovalContext("refund", {"amount": 5})
    _Waiting(ask(timeout=30), store, Agent("Bot", ["read:x"]), "write:refunds", context).start()

    now = time.time()
    day = Settings().max_ttl
    if store_url.startswith("sqlite"):
        # Read in another process: a second connection here would cost the store its locks.
        path = Path(store_url[len("sqlite:///") :])
        read = (
            "import json, sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
            "print(json.dumps(db.execute('SELECT key, expires_at FROM entries').fetchall()))"
        )
        done = subprocess.run(
            [sys.executable, "-c", read, str(path)], capture_output=True, text=True, check=True
        )
        expiries = dict(json.loads(done.stdout))
    else:
        import redis

        client = redis.Redis.from_url(store_url, decode_responses=True)
        keys = client.keys("agentsudo:*")
        expiries = {k.removeprefix("agentsudo:"): now + client.pttl(k) / 1000 for k in keys}
        client.close()
    assert len(expiries) == 5  # revoked, agent-revoked, once, used, the approval request
    for key, expires_at in expiries.items():
        assert now < expires_at <= now + day + 2 * 300 + 1, key  # revocation.py's bounds
    assert expiries[f"once:{once.claims['jti']}"] == pytest.approx(once.claims["exp"] + 300, abs=1)
    assert expiries[f"used:{once.claims['jti']}"] == pytest.approx(once.claims["exp"] + 300, abs=1)


def test_sqlite_deletes_expired_rows(tmp_path: Path) -> None:
    clock = [1000.0]
    store = SqliteStore(tmp_path / "state.db", clock=lambda: clock[0])
    store.put("old", "v", expires_at=1001)
    store.put("new", "v", expires_at=5000)
    clock[0] = 2000.0
    assert store.get("old") is None
    assert store.purge() == 1
    clock[0] = 3000.0 + 61  # writes clean up too, at most once a minute
    store.put("late", "v", expires_at=3000)  # already expired when written
    store.put("other", "v", expires_at=9000)
    with sqlite3.connect(tmp_path / "state.db") as db:
        keys = sorted(k for (k,) in db.execute("SELECT key FROM entries"))
    assert keys == ["new", "other"]


# -- SQLite specifics ------------------------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.put("k", "v", expires_at=_later())
    assert stat.S_IMODE(os.stat(tmp_path / "state.db").st_mode) == 0o600
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel.db")
    assert isinstance(relative, SqliteStore) and relative.path == Path("rel.db")
    absolute = open_store(f"sqlite:///{tmp_path / 'abs.db'}")
    assert isinstance(absolute, SqliteStore) and absolute.path == tmp_path / "abs.db"
    assert str(absolute.path).startswith("/")


def test_sqlite_store_survives_fork(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("before", "v", expires_at=_later())
    pid = os.fork()
    if pid == 0:  # the child opens its own connection
        try:
            store.put("child", "v", expires_at=_later())
            os._exit(0 if store.get("before") == "v" else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("child") == "v"


# -- URLs and settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["", "sqlite://", "sqlite:///", "postgres://db/x", "memcached://h", "/tmp/x.db"]
)
def test_not_a_store_url(url: str) -> None:
    with pytest.raises(ConfigError, match="expected sqlite:///path or redis://host:port/db"):
        open_store(url)


def test_a_password_never_shows(tmp_path: Path) -> None:
    store = open_store(f"redis://user:s3cret@127.0.0.1:{free_port()}/0")
    assert "s3cret" not in repr(store) and "s3cret" not in store.url
    with pytest.raises(StoreUnavailableError) as refused:
        store.get("k")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError) as bad:
        open_store("mysql://root:s3cret@db/x")
    assert "s3cret" not in str(bad.value)


def test_default_store_is_a_file_in_the_key_directory(tmp_path: Path) -> None:
    settings = Settings(keys_dir=tmp_path / "keys")
    assert default_store_url(settings) == f"sqlite:///{tmp_path / 'keys' / STATE_FILE}"
    reader = open_settings_store(settings, reader=True)  # a verifier's: reads, creates nothing
    assert isinstance(reader, SqliteStore) and reader.get("x") is None
    assert not (tmp_path / "keys").exists()
    assert isinstance(open_settings_store(settings), SqliteStore)
    chosen = Settings(keys_dir=tmp_path / "keys", store="redis://127.0.0.1:1/3")
    assert default_store_url(chosen) == "redis://127.0.0.1:1/3"


def test_the_store_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTSUDO_STORE", f"sqlite:///{tmp_path / 'x.db'}")
    assert Settings.from_env().store == f"sqlite:///{tmp_path / 'x.db'}"


# -- failing closed --------------------------------------------------------------------------


@pytest.fixture(params=("sqlite", "redis"))
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that cannot be reached: a path under a regular file, or a closed port."""
    if request.param == "sqlite":
        (tmp_path / "a-file").write_text("not a directory")
        return f"sqlite:///{tmp_path / 'a-file' / 'state.db'}"
    return f"redis://127.0.0.1:{free_port()}/0"


def test_every_operation_fails_closed_when_unreachable(unreachable_url: str) -> None:
    store = open_store(unreachable_url)  # opening connects to nothing
    operations = [
        lambda: store.get("k"),
        lambda: store.get_many(["k"]),
        lambda: store.put("k", "v", expires_at=_later()),
        lambda: store.add("k", "v", expires_at=_later()),
        lambda: store.take("k"),
        lambda: store.items("k"),
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="is unavailable") as refused:
            operation()
        assert time.monotonic() - started < 3  # fast: no long back-off
        assert isinstance(refused.value, ConfigError)


def test_a_corrupt_sqlite_file_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StoreUnavailableError, match="not a database"):
        open_store(f"sqlite:///{tmp_path / 'state.db'}").get("k")


def test_a_redis_server_that_goes_away_fails_closed(
    tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    with redis_server(tmp_path) as (url, process):
        verifier = Verifier(JwksFile(key_dir.jwks_path), store=open_store(url))
        token = issuer.issue("SupportBot", "read:orders").token
        assert verifier.verify(token).subject == "SupportBot"
        process.terminate()
        process.wait(5)
        with pytest.raises(StoreUnavailableError):
            verifier.verify(token)  # a cached token: still asks the store, and fails closed


def test_ask_with_an_unreachable_store_refuses(unreachable_url: str) -> None:
    from agentsudo_tokens import Agent, PermissionDeniedError, sudo

    @sudo(scope="write:refunds", on_deny=ask(timeout=5, store=unreachable_url))
    def refund() -> str:
        return "refunded"

    with Agent("SupportBot", ["read:orders"]).start_session():
        with pytest.raises(PermissionDeniedError, match="cannot ask: state store") as refused:
            refund()
    assert isinstance(refused.value.__cause__, StoreUnavailableError)


def test_redis_url_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(StoreUnavailableError, match=r"pip install '\.\[redis\]' in a checkout"):
        open_store("redis://127.0.0.1:6379/0")


def test_items_are_exactly_the_live_keys_under_the_prefix(store: Store) -> None:
    """The range search (SQLite) or the escaped match (Redis) finds neither more nor less."""
    later = _later()
    for key in ("revoked:a", "revoked:b", "revoked", "revoked;", "revokee", "revoked:\u00e9",
                "revoked:*?[", "used:revoked:x", "Revoked:a", "\u6f22:1", "\u6f22:2"):  # fmt: skip
        store.put(key, key, expires_at=later)
    store.put("revoked:gone", "x", expires_at=1.0)  # expired
    assert sorted(store.items("revoked:")) == [
        "revoked:*?[", "revoked:a", "revoked:b", "revoked:\u00e9",
    ]  # fmt: skip
    assert sorted(store.items("revoked")) == [
        "revoked", "revoked:*?[", "revoked:a", "revoked:b", "revoked:\u00e9", "revoked;",
    ]  # fmt: skip
    assert sorted(store.items("\u6f22:")) == ["\u6f22:1", "\u6f22:2"]
    assert store.items("nothing:") == {}

"""Budget debits on SQLite: the lock file that queues them, forks, and failing closed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentsudo_tokens.errors import StoreUnavailableError
from agentsudo_tokens.state.sqlite import SqliteStore

KEY = "budget:tok:0"
HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _later() -> float:
    return time.time() + 3600


def test_the_lock_file_is_private_and_made_at_the_first_debit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("k", "v", expires_at=_later())
    assert not (tmp_path / "state.db-lock").exists()  # only debits queue on it
    store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
    assert stat.S_IMODE(os.stat(tmp_path / "state.db-lock").st_mode) == 0o600
    store.close()


def test_a_link_in_place_of_the_lock_file_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "state.db-lock").symlink_to(elsewhere)
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(StoreUnavailableError, match="is unavailable"):
        store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
    assert not elsewhere.exists() and store.spent(KEY) is None
    store.close()


def test_a_lock_file_others_may_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db-lock").touch(0o666)
    os.chmod(tmp_path / "state.db-lock", 0o666)
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(StoreUnavailableError, match="not a private regular file"):
        store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
    store.close()


def test_a_debit_stuck_in_another_process_fails_closed_after_the_timeout(tmp_path: Path) -> None:
    """A process frozen mid-debit holds the queue: others refuse after the timeout, not hang."""
    store = SqliteStore(tmp_path / "state.db", timeout=0.5)
    store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "state.db-lock"), "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="held the lock for 0.5 s"):
            store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
        assert 0.5 <= time.monotonic() - started < 2
        assert store.spent(KEY) == ({"a": 5}, {"a": 1})  # reads never queue
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later()) == {"a": 2}  # released
    store.close()


def test_debits_survive_a_fork(tmp_path: Path) -> None:
    """The child opens its own connection and lock file: it never shares the parent's turn."""
    store = SqliteStore(tmp_path / "state.db")
    store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
    pid = os.fork()
    if pid == 0:
        try:
            spent = store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
            os._exit(0 if spent == {"a": 2} else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.spend(KEY, {"a": 3}, {"a": 5}, expires_at=_later()) == {"a": 5}
    assert store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later()) is None
    store.close()


def test_debits_go_on_after_the_store_is_closed(tmp_path: Path) -> None:
    """Closing releases the connection and the lock file; the next use reopens both."""
    store = SqliteStore(tmp_path / "state.db")
    store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later())
    store.close()
    assert store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later()) == {"a": 2}
    store.close()

"""The embedded store: one SQLite file in WAL mode, shared by every process on a machine.

    store = SqliteStore("keys/agentsudo-state.db")      # or AGENTSUDO_STORE=sqlite:///keys/...

One table ``entries(key PRIMARY KEY, value, expires_at)``. Reads ignore
expired rows; writes delete them (at most once a minute per process). ``add``
is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` statement, so
SQLite's write lock makes exactly one concurrent caller win; ``take`` runs in a
``BEGIN IMMEDIATE`` transaction.

**One connection per file per process.** SQLite coordinates processes with
POSIX advisory locks, and POSIX drops *every* lock a process holds on a file
when it closes *any* descriptor of that file. A second connection (or a stray
``os.open``/``os.close``) on the same file in one process would silently
cancel the first one's locks; another process then believes it is alone,
checkpoints and deletes ``-wal``/``-shm`` under the live connection ("disk I/O
error", lost writes). So every ``SqliteStore`` on one file (same device and
inode) in one process shares one connection, counted by reference and closed
with the last store; a forked child starts afresh. The file is created with
mode 0600 by an exclusive create, which cannot touch a file another
connection already holds; a symbolic link is refused.

``create=False`` is the reader's mode (a verifier): while the file does not
exist, reads find nothing and nothing is created; the first write creates it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreUnavailableError
from .base import Store

__all__ = ["SqliteStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    "key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at)",
)
_UPSERT = (
    "INSERT INTO entries (key, value, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
_ADD = _UPSERT + " WHERE entries.expires_at <= ?"
_PURGE_EVERY = 60.0


@dataclass(eq=False)
class _Shared:
    """The one connection of this process to one database file."""

    conn: sqlite3.Connection
    key: tuple[int, int]  # (st_dev, st_ino)
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    next_purge: float = 0.0


class _Connections:
    """This process's open database files, by (device, inode).

    A process-wide table is the point here: POSIX record locks belong to the
    process, not to a connection (see the module docstring).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[tuple[int, int], _Shared] = {}
        self.pid = os.getpid()
        self.writes = 0  # every write through any store of this process, for cache invalidation

    def acquire(self, key: tuple[int, int], connect: Callable[[], sqlite3.Connection]) -> _Shared:
        with self.lock:
            if self.pid != os.getpid():  # a forked child: the parent's connections are not ours
                self.open, self.pid = {}, os.getpid()
            shared = self.open.get(key)
            if shared is None:
                shared = self.open[key] = _Shared(connect(), key)
            shared.users += 1
            return shared

    def release(self, shared: _Shared, pid: int) -> None:
        with self.lock:
            if pid != self.pid or self.open.get(shared.key) is not shared:
                return  # another process's, or already gone
            shared.users -= 1
            if shared.users <= 0:
                del self.open[shared.key]
                with shared.lock:
                    shared.conn.close()


_CONNECTIONS = _Connections()


class SqliteStore(Store):
    """A store in one SQLite file, safe for many threads and processes.

    :param path: the database file; created (mode 0600) when missing.
    :param timeout: seconds to wait for another process's write lock.
    :param create: ``False``: a missing file reads as empty and is created by the first write.
    :param clock: seconds since the epoch; for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.timeout = timeout
        self.create = create
        self._clock = clock
        self._lock = threading.Lock()
        self._shared: _Shared | None = None
        self._pid = 0
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]

    @property
    def changes(self) -> int:
        """Grows with every write through any SQLite store of this process."""
        return _CONNECTIONS.writes

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return StoreUnavailableError(
            f"state store {self.url} is unavailable: {detail}",
            expected="a readable and writable SQLite file",
            found=type(exc).__name__,
        )

    def _file_key(self, create: bool) -> tuple[int, int] | None:
        """The file's (device, inode); ``None`` when it is missing and not to be created."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            if not create:
                return None
            try:  # exclusive: a new inode, which no connection of ours can hold locks on
                os.close(
                    os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                )
            except FileExistsError:
                pass  # another process made it first
            info = os.lstat(self.path)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{self.path} is not a regular file (a link or a device is refused)")
        return info.st_dev, info.st_ino

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            for attempt in range(50):  # switching to WAL needs a moment alone with the file
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.01)
            conn.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except sqlite3.Error as exc:
            conn.close()  # no other connection of ours is on this file: acquire holds the table
            raise self._unavailable(exc) from exc
        return conn

    def _attach(self, *, write: bool) -> _Shared | None:
        """This process's connection to the file, opened on first use; ``None``: no file yet."""
        shared = self._shared
        if shared is not None and self._pid == os.getpid():
            return shared
        try:
            key = self._file_key(create=write or self.create)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        if key is None:
            return None
        shared = _CONNECTIONS.acquire(key, self._connect)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._shared, self._pid = shared, os.getpid()
        self._finalizer = weakref.finalize(self, _CONNECTIONS.release, shared, self._pid)
        return shared

    @contextmanager
    def _connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        with self._lock:
            shared = self._attach(write=write)
        if shared is None:
            yield None
            return
        with shared.lock:
            conn = shared.conn
            try:
                yield conn
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise self._unavailable(exc) from exc
            if write:
                _CONNECTIONS.writes += 1

    def _after_write(self, shared_conn: sqlite3.Connection, now: float) -> None:
        shared = self._shared
        if shared is not None and now >= shared.next_purge:
            shared.next_purge = now + _PURGE_EVERY
            shared_conn.execute("DELETE FROM entries WHERE expires_at <= ?", (now,))

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        marks = ", ".join("?" * len(keys))
        with self._connection() as conn:
            if conn is None:
                return [None] * len(keys)
            rows = conn.execute(
                f"SELECT key, value FROM entries WHERE key IN ({marks}) AND expires_at > ?",
                (*keys, self._clock()),
            ).fetchall()
        found = dict(rows)
        return [found.get(key) for key in keys]

    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            if conn is None:
                return None
            row = conn.execute(
                "SELECT value FROM entries WHERE key = ? AND expires_at > ?", (key, self._clock())
            ).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str, *, expires_at: float) -> None:
        now = self._clock()
        with self._connection(write=True) as conn:
            assert conn is not None
            conn.execute(_UPSERT, (key, value, float(expires_at)))
            self._after_write(conn, now)

    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        now = self._clock()
        with self._connection(write=True) as conn:
            assert conn is not None
            added = conn.execute(_ADD, (key, value, float(expires_at), now)).rowcount == 1
            self._after_write(conn, now)
        return added

    def take(self, key: str) -> str | None:
        with self._connection(write=True) as conn:
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT value, expires_at FROM entries WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                conn.execute("DELETE FROM entries WHERE key = ?", (key,))
            conn.execute("COMMIT")
        if row is None or row[1] <= self._clock():
            return None
        return str(row[0])

    def items(self, prefix: str) -> dict[str, str]:
        with self._connection() as conn:
            if conn is None:
                return {}
            rows = conn.execute(
                "SELECT key, value FROM entries "
                "WHERE substr(key, 1, ?) = ? AND expires_at > ? ORDER BY key",
                (len(prefix), prefix, self._clock()),
            ).fetchall()
        return dict(rows)

    def purge(self) -> int:
        """Delete expired rows now; return how many."""
        with self._connection() as conn:
            if conn is None:
                return 0
            return int(
                conn.execute("DELETE FROM entries WHERE expires_at <= ?", (self._clock(),)).rowcount
            )

    def close(self) -> None:
        with self._lock:
            finalizer, self._finalizer, self._shared = self._finalizer, None, None
        if finalizer is not None:
            finalizer()  # releases this store's share; the last one closes the connection

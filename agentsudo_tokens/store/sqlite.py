"""The embedded store: one SQLite file in WAL mode, shared by every process on a machine.

    store = SqliteStore("keys/agentsudo-state.db")      # or AGENTSUDO_STORE=sqlite:///keys/...

One table ``entries(key PRIMARY KEY, value, expires_at)``. Reads ignore
expired rows; writes delete them (at most once a minute per process). ``add``
is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` statement, so
SQLite's write lock makes exactly one concurrent caller win; ``take`` runs in a
``BEGIN IMMEDIATE`` transaction. The file is created with mode 0600. Each
process (and each side of a ``fork``) opens its own connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


class SqliteStore(Store):
    """A store in one SQLite file, safe for many threads and processes.

    :param path: the database file; created (mode 0600) when missing.
    :param timeout: seconds to wait for another process's write lock.
    :param clock: seconds since the epoch; for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._next_purge = 0.0

    def _connect(self) -> sqlite3.Connection:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
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
            conn.close()
            raise self._unavailable(exc) from exc
        return conn

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return StoreUnavailableError(
            f"state store {self.url} is unavailable: {detail}",
            expected="a readable and writable SQLite file",
            found=type(exc).__name__,
        )

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None or self._pid != os.getpid():  # never share one across fork
                self._conn, self._pid = self._connect(), os.getpid()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise self._unavailable(exc) from exc

    def _after_write(self, conn: sqlite3.Connection, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY
            conn.execute("DELETE FROM entries WHERE expires_at <= ?", (now,))

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        marks = ", ".join("?" * len(keys))
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT key, value FROM entries WHERE key IN ({marks}) AND expires_at > ?",
                (*keys, self._clock()),
            ).fetchall()
        found = dict(rows)
        return [found.get(key) for key in keys]

    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT value FROM entries WHERE key = ? AND expires_at > ?", (key, self._clock())
            ).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str, *, expires_at: float) -> None:
        now = self._clock()
        with self._connection() as conn:
            conn.execute(_UPSERT, (key, value, float(expires_at)))
            self._after_write(conn, now)

    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        now = self._clock()
        with self._connection() as conn:
            added = conn.execute(_ADD, (key, value, float(expires_at), now)).rowcount == 1
            self._after_write(conn, now)
        return added

    def take(self, key: str) -> str | None:
        with self._connection() as conn:
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
            rows = conn.execute(
                "SELECT key, value FROM entries "
                "WHERE substr(key, 1, ?) = ? AND expires_at > ? ORDER BY key",
                (len(prefix), prefix, self._clock()),
            ).fetchall()
        return dict(rows)

    def purge(self) -> int:
        """Delete expired rows now; return how many."""
        with self._connection() as conn:
            return conn.execute(
                "DELETE FROM entries WHERE expires_at <= ?", (self._clock(),)
            ).rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

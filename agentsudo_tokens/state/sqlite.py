"""The embedded store: one SQLite file in WAL mode, shared by every process on a machine.

    store = SqliteStore("keys/agentsudo-state.db")      # or AGENTSUDO_STORE=sqlite:///keys/...

One table ``entries(key PRIMARY KEY, value, expires_at)``. Reads ignore
expired rows; writes delete them (at most once a minute per process). ``add``
is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` statement, so
SQLite's write lock makes exactly one concurrent caller win; ``take`` and
``spend`` (read the budget, check, write it back) each run in one
``BEGIN IMMEDIATE`` transaction. Debits also queue on a lock file beside the
database (``<file>-lock``, see ``_filelock``): for fairness under load, not
for atomicity.

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

import collections
import os
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreUnavailableError
from ._filelock import end_turn, open_lock, wait_turn
from .base import MAX_NAMES, Counters, Store, debit, decode_budget, encode_budget

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
    closed: bool = False
    queue: int = -1  # the debits' lock file (``_filelock``), opened at the first debit

    def close(self) -> None:
        """Close the connection and the lock file; call with ``lock`` held."""
        self.closed = True
        self.conn.close()
        if self.queue >= 0:
            os.close(self.queue)
            self.queue = -1


class _Connections:
    """This process's open database files, by (device, inode).

    A process-wide table is the point here: POSIX record locks belong to the
    process, not to a connection (see the module docstring). Before a ``fork``
    every connection is closed (each side reopens on its next use): SQLite's
    in-memory record of the locks it holds would otherwise be copied into the
    child, whose new connection would then believe it held locks it does not.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()  # also guards each store's attach; renewed in a child
        self.open: dict[tuple[int, int], _Shared] = {}
        self.pending: collections.deque[_Shared] = collections.deque()  # released by the GC
        self.writes = 0  # every write through any store of this process, for cache invalidation

    def acquire(self, key: tuple[int, int], connect: Callable[[], sqlite3.Connection]) -> _Shared:
        with self.lock:
            self._drain()
            shared = self.open.get(key)
            if shared is None:
                shared = self.open[key] = _Shared(connect(), key)
            shared.users += 1
            return shared

    def release(self, shared: _Shared) -> None:
        """Give back one store's share; the last one closes the connection."""
        with self.lock:
            self._drain()
            self._release(shared)

    def release_later(self, shared: _Shared) -> None:
        """The same, from a garbage-collected store: the collector may run while this
        thread holds a lock of ours, so only note it (a deque append takes no lock)."""
        self.pending.append(shared)

    def _drain(self) -> None:
        while self.pending:
            self._release(self.pending.popleft())

    def _release(self, shared: _Shared) -> None:
        if self.open.get(shared.key) is not shared:
            return  # closed at a fork, or already gone
        shared.users -= 1
        if shared.users <= 0:
            del self.open[shared.key]
            with shared.lock:
                shared.close()

    def before_fork(self) -> None:
        """Close every connection, and hold the table until the fork is done."""
        self.lock.acquire()
        for shared in self.open.values():
            with shared.lock:  # waits for an operation in progress in another thread
                shared.close()
        self.open = {}
        self.pending.clear()

    def after_fork_in_parent(self) -> None:
        self.lock.release()

    def after_fork_in_child(self) -> None:
        self.lock = threading.RLock()  # the parent's other threads are gone with their locks
        self.open = {}
        self.pending.clear()


_CONNECTIONS = _Connections()
os.register_at_fork(
    before=_CONNECTIONS.before_fork,
    after_in_parent=_CONNECTIONS.after_fork_in_parent,
    after_in_child=_CONNECTIONS.after_fork_in_child,
)


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
        self._shared: _Shared | None = None
        self._identity_checked = 0.0  # monotonic: when the path was last seen to be our file
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
        """The file's (device, inode) once it is trusted; ``None``: missing, not to be created.

        :raises OSError: it cannot be examined or created.
        :raises StoreUnavailableError: it is not a file only this user can change.
        """
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            if not create:
                return None
            try:  # exclusive: a new inode, which no connection of ours can hold locks on
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                os.close(fd)
            except FileExistsError:
                pass  # another process made it first: checked below like any other
            info = os.lstat(self.path)
        self._check_trusted(info)
        return info.st_dev, info.st_ino

    def _check_trusted(self, info: os.stat_result) -> None:
        """Whoever can write the state can revoke, un-revoke and approve: only we may."""
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file (a link or a device is refused)"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
        elif info.st_mode & 0o022:
            problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
        elif info.st_nlink != 1:
            problem = f"has {info.st_nlink} hard links"
        else:
            directory = self.path.absolute().parent
            mode = os.stat(directory).st_mode
            if mode & 0o022:
                problem = (
                    f"is in {directory}, which group or others may write "
                    f"(mode {stat.S_IMODE(mode):04o})"
                )
        if problem is not None:
            raise StoreUnavailableError(
                f"state store {self.url} {problem}: refusing it",
                expected="a regular file of this user, mode 0600, in a directory only it writes",
                found=problem,
            )

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
            conn.execute("PRAGMA trusted_schema = OFF")
            for statement in _SCHEMA:
                conn.execute(statement)
            extra = conn.execute(
                "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') "
                "OR (type = 'table' AND name != 'entries')"
            ).fetchall()
        except sqlite3.Error as exc:
            conn.close()  # no other connection of ours is on this file: acquire holds the table
            raise self._unavailable(exc) from exc
        if extra:  # a trigger could forget a use or answer an approval: not our schema
            conn.close()
            found = ", ".join(f"{kind} {name!r}" for kind, name in extra)
            raise StoreUnavailableError(
                f"state store {self.url} holds objects it never creates ({found}): refusing it",
                expected="only the table 'entries'",
                found=found,
            )
        return conn

    def _attach(self, *, write: bool) -> _Shared | None:
        """This process's connection to the file, opened on first use; ``None``: no file yet.

        The path is looked at again about once a second: a state file removed and
        made anew (a reset) is reopened, not read through the old inode forever.
        """
        shared = self._shared
        now = time.monotonic()
        if shared is not None and not shared.closed and now - self._identity_checked < 1.0:
            return shared
        try:
            key = self._file_key(create=write or self.create)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        self._identity_checked = now
        if shared is not None and not shared.closed and key == shared.key:
            return shared
        self._detach()
        if key is None:
            return None
        shared = _CONNECTIONS.acquire(key, self._connect)
        self._shared = shared
        self._finalizer = weakref.finalize(self, _CONNECTIONS.release_later, shared)
        return shared

    def _detach(self) -> None:
        shared, finalizer = self._shared, self._finalizer
        self._shared = self._finalizer = None
        if shared is not None and finalizer is not None and finalizer.detach() is not None:
            _CONNECTIONS.release(shared)  # this store's share; the last one closes the connection

    @contextmanager
    def _connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        """This process's connection, held for the block; ``None``: no file to read."""
        with self._held(write=write) as shared:
            yield None if shared is None else shared.conn

    @contextmanager
    def _held(self, *, write: bool = False, notify: bool = True) -> Iterator[_Shared | None]:
        """This process's share of the file, its lock held for the block; ``None``: no file.

        :param notify: a write that verifiers must notice (``changes``); debits are not.
        """
        give_up = time.monotonic() + self.timeout
        while True:  # a connection closed under us (a fork in another thread): reopen
            with _CONNECTIONS.lock:  # not a lock of this store's: a forked child gets it anew
                shared = self._attach(write=write)
            if shared is None:
                yield None
                return
            with shared.lock:
                if not shared.closed:
                    conn = shared.conn
                    try:
                        yield shared
                    except sqlite3.Error as exc:
                        if conn.in_transaction:
                            conn.rollback()
                        raise self._unavailable(exc) from exc
                    if write and notify:
                        _CONNECTIONS.writes += 1
                    return
            if time.monotonic() > give_up:
                raise self._unavailable(RuntimeError("the connection kept closing"))

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

    def put_many(self, entries: Sequence[tuple[str, str, float]]) -> None:
        """Every entry in one transaction: one wait on the disk, not one each."""
        if not entries:
            return
        now = self._clock()
        rows = [(key, value, float(expires_at)) for key, value, expires_at in entries]
        with self._connection(write=True) as conn:
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_UPSERT, rows)
            conn.execute("COMMIT")
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

    def _spend(self, key: str, counters: Counters, expires_at: float) -> dict[str, int] | None:
        now = self._clock()
        with self._held(write=True, notify=False) as shared:
            assert shared is not None
            self._wait_turn(shared)
            try:
                after = self._debit(shared.conn, key, counters, expires_at, now)
            finally:
                with suppress(OSError):  # only an order of turns: closing releases it anyway
                    end_turn(shared.queue)
        return None if after is None else {name: after[name] for name, _, _ in counters}

    def _wait_turn(self, shared: _Shared) -> None:
        """Queue behind other processes' debits on this file (``_filelock``: fairness)."""
        try:
            if shared.queue < 0:
                shared.queue = open_lock(Path(f"{self.path}-lock"))
            wait_turn(shared.queue, self.timeout)
        except OSError as exc:  # TimeoutError included
            raise self._unavailable(exc) from exc

    def _debit(
        self,
        conn: sqlite3.Connection,
        key: str,
        counters: Counters,
        expires_at: float,
        now: float,
    ) -> dict[str, int] | None:
        """Read, check and write back one budget in one ``BEGIN IMMEDIATE`` transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT value, expires_at FROM entries WHERE key = ?", (key,)
            ).fetchone()
            before: dict[str, int] = {}
            if row is not None and row[1] > now:
                before = decode_budget(str(row[0]), self.url, key)[1]
                expires_at = max(expires_at, float(row[1]))
            after = debit(before, counters)
            if after is None:
                conn.execute("ROLLBACK")
                return None
            if len(after) > MAX_NAMES:  # as many names as decode_budget reads back
                raise StoreUnavailableError(
                    f"state store {self.url}: {key[:300]!r} would keep more than "
                    f"{MAX_NAMES} counts: refusing it",
                    expected=f"at most {MAX_NAMES} names under one key",
                    found=len(after),
                )
            limits = {name: limit for name, _, limit in counters}
            conn.execute(_UPSERT, (key, encode_budget(limits, after), expires_at))
            self._after_write(conn, now)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return after

    def _now(self) -> float:
        return self._clock()

    def items(self, prefix: str) -> dict[str, str]:
        with self._connection() as conn:
            if conn is None:
                return {}
            now = self._clock()
            last = ord(prefix[-1]) if prefix else 0xD7FF
            if last < 0xD7FF:  # a range on the primary key: a search, not a scan of every entry
                above = prefix[:-1] + chr(last + 1)
                rows = conn.execute(
                    "SELECT key, value FROM entries WHERE key >= ? AND key < ? "
                    "AND expires_at > ? ORDER BY key",
                    (prefix, above, now),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT key, value FROM entries "
                    "WHERE substr(key, 1, ?) = ? AND expires_at > ? ORDER BY key",
                    (len(prefix), prefix, now),
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
        with _CONNECTIONS.lock:
            self._detach()

"""The append-only, hash-chained JSON-lines audit file.

    sink = AuditFile("audit.jsonl")
    sink.append({"outcome": "denied", "agent": "SupportBot", ...})
    report = verify_chain("audit.jsonl")       # ChainReport(ok, events, bad_line, ...)

The line format and its hashes are ``chain``'s; reading the file back
(``verify_chain``, ``read_events``) is ``reading``'s, re-exported here; the
rules for trusting the file are ``opening``'s. This module appends.

Many threads and processes may append at once. Each append holds an exclusive
``flock`` on its own open file (and a thread lock) while it reads the previous
line's hash through that same descriptor, however long that line is, and
writes its whole line to the ``O_APPEND`` descriptor: a line no other writer
can interleave with, split, or chain to the same predecessor. A forked child
opens the file afresh (a descriptor it inherited shares the parent's lock).

The file is opened with ``O_NOFOLLOW`` and must be a regular file that only
its owner may write: a symlink, a file writable by group or others, one
owned by another user or with a second name (hard link), and a directory
anyone may write without the sticky bit are refused (``ConfigError``). The
chain proves the file was not edited in place; to notice a rewrite of the
whole file, keep the head hash somewhere else too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .chain import GENESIS, MAX_LINE_BYTES, line_hash, parse_line
from .opening import check_directory, check_file, open_checked
from .reading import ChainReport, read_events, verify_chain

__all__ = ["GENESIS", "MAX_LINE_BYTES", "AuditFile", "ChainReport", "read_events", "verify_chain"]

_CHUNK = 8 * 1024
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Exactly ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    pieces: list[bytes] = []
    while size > 0:
        piece = os.pread(fd, size, offset)
        if not piece:
            break
        pieces.append(piece)
        size -= len(piece)
        offset += len(piece)
    return b"".join(pieces)


def _last_line(fd: int, size: int) -> tuple[bytes, bool]:
    """The last line of the file's first ``size`` bytes, read backwards; and whether it is torn.

    Reads in growing chunks until the newline before the line, so a last line
    of any length up to ``MAX_LINE_BYTES`` comes back whole.
    """
    pieces: list[bytes] = []
    position, step, torn, collected = size, _CHUNK, False, 0
    while position > 0 and collected <= MAX_LINE_BYTES:
        step = min(step, position)
        position -= step
        chunk = _pread(fd, step, position)
        if position + step == size:  # the chunk holding the final byte
            torn = not chunk.endswith(b"\n")
            chunk = chunk if torn else chunk[:-1]
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            pieces.append(chunk[cut + 1 :])
            break
        pieces.append(chunk)
        collected += len(chunk)
        step = min(step * 2, MAX_LINE_BYTES)
    return b"".join(reversed(pieces)), torn


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "the write made no progress")
        view = view[written:]


_open_files: weakref.WeakSet[AuditFile] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sink in list(_open_files):
        sink._forget_after_fork()


class AuditFile:
    """Appends events to a JSON-lines file, chained by hashes, safe across processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._last: tuple[int, str] | None = None  # (file size after our last write, its hash)
        # the last line this object wrote: its byte offsets and the SHA-256 of its bytes
        self.last_line: tuple[int, int, bytes] | None = None
        self._counted: tuple[int, int] | None = None  # (an offset, the newlines before it)

    def __repr__(self) -> str:
        return f"AuditFile({str(self.path)!r})"

    def _open(self) -> int:
        if self._fd is None:
            check_directory(self.path)
            self._fd = open_checked(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, writing=True)
            self._last = None
            self._counted = None
            _open_files.add(self)
        return self._fd

    def open(self) -> None:
        """Open (or create) the file now, so an unusable path fails here, not at an append.

        :raises ConfigError: the file cannot be opened or trusted.
        """
        with self._lock:
            self._open()

    def _previous(self, fd: int, size: int) -> tuple[str, bool]:
        """The hash to chain to, and whether the file ends in a torn line (read under the lock)."""
        if size == 0:
            return GENESIS, False
        if self._last is not None and self._last[0] == size:
            return self._last[1], False
        last, torn = _last_line(fd, size)
        fields, _problem = parse_line(last)
        previous = fields.get("hash") if fields is not None else None
        if not isinstance(previous, str):  # a broken tail: chain to the bytes themselves
            previous = hashlib.sha256(last).hexdigest()
        return previous, torn

    def _lines_before(self, fd: int, size: int) -> int:
        """How many newlines the file's first ``size`` bytes hold (under the lock).

        Counted once, then only from where the last count ended: the file only grows.
        """
        offset, lines = self._counted if self._counted is not None else (0, 0)
        if offset > size:  # shorter than when counted: count it all again
            offset, lines = 0, 0
        while offset < size:
            chunk = _pread(fd, min(size - offset, 1 << 20), offset)
            if not chunk:
                break
            lines += chunk.count(b"\n")
            offset += len(chunk)
        self._counted = (offset, lines)
        return lines

    def append(
        self, event: dict[str, Any], *, seal: Callable[[str, int], dict[str, Any]] | None = None
    ) -> str:
        """Write one event as one line; return its hash.

        :param seal: called under the file's lock with the hash this line chains to
            and the number of lines before it; the fields it returns are added to the
            event (the broker's signed chain head: ``broker.audit``).
        :raises ConfigError: the file cannot be opened, trusted or written, or the event
            is not strict JSON or would make a line longer than ``MAX_LINE_BYTES``.
        """
        fields = {k: v for k, v in event.items() if k not in ("prev", "hash")}
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                info = os.fstat(fd)
                check_file(self.path, info, writing=True)  # still ours, even if chmod-ed since
                fields["prev"], torn = self._previous(fd, info.st_size)
                if seal is not None:
                    before = self._lines_before(fd, info.st_size) + (1 if torn else 0)
                    fields.update(seal(fields["prev"], before))
                try:
                    fields["hash"] = line_hash(fields)
                    data = (_DUMPS(fields) + "\n").encode("ascii")
                except (TypeError, ValueError, RecursionError) as exc:
                    raise ConfigError(
                        f"cannot write to the audit log {self.path}: the event is not strict JSON"
                    ) from exc
                if len(data) > MAX_LINE_BYTES:
                    raise ConfigError(
                        f"an event of {len(data)} bytes is too big for the audit log "
                        f"{self.path} (at most {MAX_LINE_BYTES} bytes a line)",
                        expected=MAX_LINE_BYTES,
                        found=len(data),
                    )
                if torn:  # a writer died mid-line: end that line, do not glue ours to it
                    data = b"\n" + data
                try:
                    _write_all(fd, data)
                except OSError:  # a full disk: leave no torn line behind for the next writer
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, info.st_size)
                    raise
                self._last = (info.st_size + len(data), fields["hash"])
                line = data[1:] if torn else data
                end = info.st_size + len(data)
                self.last_line = (end - len(line), end, hashlib.sha256(line).digest())
                if self._counted is not None and self._counted[0] == info.st_size:
                    self._counted = (info.st_size + len(data), self._counted[1] + data.count(b"\n"))
                return str(fields["hash"])
            except OSError as exc:
                self._last = None
                self._counted = None
                raise ConfigError(f"cannot write the audit log {self.path}: {exc}") from exc
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file descriptor (it reopens on the next append)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._last = None
            _open_files.discard(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptor (it shares the parent's lock)."""
        self._lock = threading.Lock()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._last = None
        self._counted = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""The append-only, hash-chained JSON-lines audit file.

    sink = AuditFile("audit.jsonl")
    sink.append({"outcome": "denied", "agent": "SupportBot", ...})
    report = verify_chain("audit.jsonl")       # ChainReport(ok, events, bad_line, ...)

Each line is one JSON object with the event's fields plus ``prev`` (the
``hash`` of the line before; 64 zeros for the first) and ``hash`` (SHA-256 of
``prev`` and the line's canonical JSON without ``hash``). An edited line fails
its own hash; a removed or reordered line breaks the next line's ``prev``.
Lines are read as strictly as tokens (``jws``): one UTF-8 JSON object, no
whitespace around it, no duplicate keys, finite numbers only; a line is at most
``MAX_LINE_BYTES``.

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
import stat
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError, MalformedTokenError
from ..tokens.jws import _SCAN  # the token parser's strict JSON: no duplicate keys, finite numbers

__all__ = ["GENESIS", "MAX_LINE_BYTES", "AuditFile", "ChainReport", "read_events", "verify_chain"]

GENESIS = "0" * 64
MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line (newline included) written or accepted: room for events of 1 MiB and more."""

_CHUNK = 8 * 1024
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_CANONICAL = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, sort_keys=True
).encode


def _canonical(fields: dict[str, Any]) -> bytes:
    return _CANONICAL(fields).encode()


def _line_hash(fields: dict[str, Any]) -> str:
    """The hash a line carries: over its canonical JSON without ``hash`` (``prev`` included)."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """One line (without its newline) parsed strictly: the object, or None and why not."""
    try:
        document = line.decode("utf-8", errors="strict")
        value, end = _SCAN(document, 0)
    except MalformedTokenError as exc:
        if exc.expected == "unique":
            key = str(exc.found)
            shown = repr(key) if len(key) <= 40 else repr(key[:40]) + "..."
            return None, f"a duplicate JSON key {shown}"
        return None, "not valid JSON"
    except (ValueError, RecursionError, StopIteration):
        return None, "not valid JSON"
    if end != len(document):
        return None, "not valid JSON"
    if not isinstance(value, dict):
        return None, "not an audit event"
    return value, ""


def _check_file(
    path: Path, info: os.stat_result, *, writing: bool, check_mode: bool = True
) -> None:
    """Refuse what is not a regular file only its owner may write (and, to write, ours)."""
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the audit log {path} is not a regular file", found=str(path))
    mode = stat.S_IMODE(info.st_mode)
    if check_mode and mode & 0o022:
        raise ConfigError(
            f"the audit log {path} is writable by group or others (mode {mode:04o}): "
            "any of them could rewrite it; run chmod go-w on it",
            expected="not group/world-writable",
            found=f"{mode:04o}",
        )
    if not writing:
        return
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"the audit log {path} is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}): its owner could rewrite it",
            expected=os.geteuid(),
            found=info.st_uid,
        )
    if info.st_nlink != 1:
        raise ConfigError(
            f"the audit log {path} has {info.st_nlink} names (hard links): give it exactly one",
            expected=1,
            found=info.st_nlink,
        )


def _check_directory(path: Path) -> None:
    """Refuse a directory anyone may write without the sticky bit: they could swap the file.

    A group-writable directory is accepted (Debian's ``/var/log`` is ``root:syslog``
    0775, and user-private groups make 0775 the usual mode); ``/tmp`` is sticky.
    """
    directory = path.parent
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return  # opening the file will say what is wrong
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise ConfigError(
            f"the directory {directory} of the audit log is writable by everyone without the "
            f"sticky bit (mode {stat.S_IMODE(mode):04o}): anyone could replace the file; "
            "run chmod o-w (or chmod +t) on it",
            expected="not world-writable, or sticky",
            found=f"{stat.S_IMODE(mode):04o}",
        )


def _open_checked(path: Path, flags: int, *, writing: bool, check_mode: bool = True) -> int:
    """Open ``path`` without following a symlink, and check what was opened."""
    verb = "open" if writing else "read"
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise ConfigError(
                f"the audit log {path} is a symbolic link: refusing to follow it "
                "(give the real path)",
                expected="a regular file",
                found="symbolic link",
            ) from exc
        raise ConfigError(
            f"cannot {verb} the audit log {path}: {exc.strerror}", found=str(path)
        ) from exc
    try:
        _check_file(path, os.fstat(fd), writing=writing, check_mode=check_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        self._counted: tuple[int, int] | None = None  # (an offset, the newlines before it)

    def __repr__(self) -> str:
        return f"AuditFile({str(self.path)!r})"

    def _open(self) -> int:
        if self._fd is None:
            _check_directory(self.path)
            self._fd = _open_checked(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, writing=True)
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
        fields, _problem = _parse(last)
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
                _check_file(self.path, info, writing=True)  # still ours, even if chmod-ed since
                fields["prev"], torn = self._previous(fd, info.st_size)
                if seal is not None:
                    before = self._lines_before(fd, info.st_size) + (1 if torn else 0)
                    fields.update(seal(fields["prev"], before))
                try:
                    fields["hash"] = _line_hash(fields)
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
                _write_all(fd, data)
                self._last = (info.st_size + len(data), fields["hash"])
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


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_chain`` found: ok, how many events, and the first bad line if any."""

    ok: bool
    events: int
    head: str
    bad_line: int | None = None
    problem: str | None = None


def _lines(path: Path, *, check_mode: bool) -> Iterator[tuple[int, bytes]]:
    """Each line with its number; a line longer than ``MAX_LINE_BYTES`` comes cut, no newline."""
    fd = _open_checked(path, os.O_RDONLY, writing=False, check_mode=check_mode)
    handle: IO[bytes] = os.fdopen(fd, "rb")
    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline(MAX_LINE_BYTES)
                if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    rest = raw
                    while len(rest) == MAX_LINE_BYTES and not rest.endswith(b"\n"):
                        rest = handle.readline(MAX_LINE_BYTES)  # skip the rest of it
            except OSError as exc:
                raise ConfigError(f"cannot read the audit log {path}: {exc.strerror}") from exc
            if not raw:
                return
            number += 1
            yield number, raw


def verify_chain(
    path: str | os.PathLike[str],
    *,
    check: Callable[[int, dict[str, Any]], str | None] | None = None,
) -> ChainReport:
    """Check every line's hash and link; report the first edited, removed or reordered line.

    :param check: called with each line's number and fields once its hash and link
        hold; a problem it returns ends the check there, as a tampered line (the
        broker's signed heads: ``broker.audit.verify_audit``).

    :raises ConfigError: the file cannot be read, is a symlink or not a regular file, or
        group or others may write it (then its chain proves nothing).
    """
    previous = GENESIS
    count = 0
    for number, raw in _lines(Path(path), check_mode=True):
        if not raw.endswith(b"\n"):
            return ChainReport(False, count, previous, number, "a torn or oversized line")
        fields, problem = _parse(raw[:-1])
        if fields is None:
            return ChainReport(False, count, previous, number, problem)
        if not isinstance(fields.get("hash"), str):
            return ChainReport(False, count, previous, number, "not an audit event")
        if fields["hash"] != _line_hash(fields):
            return ChainReport(False, count, previous, number, "edited: its hash does not match")
        if fields.get("prev") != previous:
            return ChainReport(
                False,
                count,
                previous,
                number,
                "out of chain: a line before it was removed, or lines were reordered",
            )
        if check is not None and (objection := check(number, fields)) is not None:
            return ChainReport(False, count, previous, number, objection)
        previous = fields["hash"]
        count += 1
    return ChainReport(True, count, previous)


def read_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each event of an audit file (lines that are not strict JSON objects are skipped).

    :raises ConfigError: the file cannot be read, is a symlink or not a regular file.
    """
    for _number, raw in _lines(Path(path), check_mode=False):
        if raw.endswith(b"\n"):
            fields, _problem = _parse(raw[:-1])
            if fields is not None:
                yield fields

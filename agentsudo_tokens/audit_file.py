"""The append-only, hash-chained JSON-lines audit file.

    sink = AuditFile("audit.jsonl")
    sink.append({"outcome": "denied", "agent": "SupportBot", ...})
    report = verify_chain("audit.jsonl")       # ChainReport(ok, events, first_bad_line, ...)

Each line is one JSON object with the event's fields plus ``prev`` (the
``hash`` of the line before; 64 zeros for the first) and ``hash`` (SHA-256 of
``prev`` and the line's canonical JSON without ``hash``). An edited line fails
its own hash; a removed or reordered line breaks the next line's ``prev``.

Many threads and processes may append at once: each append holds an exclusive
``flock`` on the file (and a thread lock), reads the previous hash, and writes
the whole line with one ``write`` on an ``O_APPEND`` descriptor, so no line is
lost or torn. The chain proves the file was not edited in place; to notice a
rewrite of the whole tail, keep the head hash somewhere else too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["GENESIS", "AuditFile", "ChainReport", "read_events", "verify_chain"]

GENESIS = "0" * 64
_TAIL = 64 * 1024
_MAX_LINE = 1 << 20


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _line_hash(fields: dict[str, Any]) -> str:
    """The hash a line carries: over its canonical JSON without ``hash`` (``prev`` included)."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


class AuditFile:
    """Appends events to a JSON-lines file, chained by hashes, safe across processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._last: tuple[int, str] | None = None  # (file size after our last write, its hash)

    def __repr__(self) -> str:
        return f"AuditFile({str(self.path)!r})"

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot open the audit log {self.path}: {exc.strerror}",
                    found=str(self.path),
                ) from exc
        return self._fd

    def _previous_hash(self, size: int) -> str:
        if size == 0:
            return GENESIS
        if self._last is not None and self._last[0] == size:
            return self._last[1]
        with self.path.open("rb") as handle:
            handle.seek(max(0, size - _TAIL))
            tail = handle.read(min(size, _TAIL))
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            previous = json.loads(last)["hash"]
        except (ValueError, KeyError, TypeError):
            previous = None
        if not isinstance(previous, str):  # a broken tail: chain to the bytes themselves
            previous = hashlib.sha256(last).hexdigest()
        return previous

    def append(self, event: dict[str, Any]) -> str:
        """Write one event as one line; return its hash.

        :raises ConfigError: the file cannot be opened or written.
        """
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                fields = {k: v for k, v in event.items() if k not in ("prev", "hash")}
                fields["prev"] = self._previous_hash(size)
                fields["hash"] = _line_hash(fields)
                line = json.dumps(fields, separators=(",", ":"), ensure_ascii=True) + "\n"
                data = line.encode("ascii")
                written = os.write(fd, data)
                if written != len(data):
                    raise ConfigError(f"short write to the audit log {self.path}")
                self._last = (size + written, fields["hash"])
                return str(fields["hash"])
            except OSError as exc:
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


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_chain`` found: ok, how many events, and the first bad line if any."""

    ok: bool
    events: int
    head: str
    bad_line: int | None = None
    problem: str | None = None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with path.open("rb") as handle:
            yield from enumerate(handle, start=1)
    except OSError as exc:
        raise ConfigError(f"cannot read the audit log {path}: {exc.strerror}") from exc


def verify_chain(path: str | os.PathLike[str]) -> ChainReport:
    """Check every line's hash and link; report the first edited, removed or reordered line.

    :raises ConfigError: the file cannot be read.
    """
    previous = GENESIS
    count = 0
    for number, raw in _lines(Path(path)):
        if not raw.endswith(b"\n") or len(raw) > _MAX_LINE:
            return ChainReport(False, count, previous, number, "a torn or oversized line")
        try:
            fields = json.loads(raw)
        except ValueError:
            return ChainReport(False, count, previous, number, "not valid JSON")
        if not isinstance(fields, dict) or not isinstance(fields.get("hash"), str):
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
        previous = fields["hash"]
        count += 1
    return ChainReport(True, count, previous)


def read_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each event of an audit file (lines that are not JSON objects are skipped).

    :raises ConfigError: the file cannot be read.
    """
    for _number, raw in _lines(Path(path)):
        try:
            fields = json.loads(raw)
        except ValueError:
            continue
        if isinstance(fields, dict):
            yield fields

"""Reading an audit file back: ``verify_chain`` checks every link, ``read_events`` lists events.

    report = verify_chain("audit.jsonl")       # ChainReport(ok, events, bad_line, ...)
    for event in read_events("audit.jsonl"): ...

Both read the file as ``opening`` allows (no symlink, a regular file); the
chain's check also refuses a file that group or others may write, since its
chain would then prove nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError
from .chain import GENESIS, MAX_LINE_BYTES, line_hash, parse_line
from .opening import open_checked

__all__ = ["ChainReport", "read_events", "verify_chain"]


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
    fd = open_checked(path, os.O_RDONLY, writing=False, check_mode=check_mode)
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
        fields, problem = parse_line(raw[:-1])
        if fields is None:
            return ChainReport(False, count, previous, number, problem)
        if not isinstance(fields.get("hash"), str):
            return ChainReport(False, count, previous, number, "not an audit event")
        if fields["hash"] != line_hash(fields):
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
            fields, _problem = parse_line(raw[:-1])
            if fields is not None:
                yield fields

"""Where a key of a TOML text is written: tomllib gives no line for a value it parsed.

    lines = TomlLines(text)
    lines.line_of(("agents", "SupportBot", "max_ttl"))        # the line of `max_ttl = ...`
    lines.line_of(("agents", "SupportBot", "scopes", 1), "write:refunds")   # that item's line
    dotted(("agents", "Support Bot", "scopes", 1))            # 'agents."Support Bot".scopes[1]'

Table headers (``[a.b]``) and ``key =`` lines are found again in the text, the
key read by tomllib itself (quotes and escapes). A key in an inline table is
placed at the line of the nearest enclosing key that has one of its own. Only
positions come from here: the values are tomllib's.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from typing import Any

__all__ = ["TomlLines", "dotted", "key_path"]

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*"
_HEADER = re.compile(rf"[ \t]*\[[ \t]*({_DOTTED})[ \t]*\]")
_KEY = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")


def key_path(text: str) -> tuple[str, ...] | None:
    """The keys of a dotted TOML key as written (quotes and escapes read by tomllib)."""
    try:
        node: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path.append(key)
    return tuple(path)


class TomlLines:
    """Which line of the text defines each table and key (found again after tomllib parsed it)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.at: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        open_string: str | None = None
        for number, line in enumerate(self.lines, 1):
            if open_string is not None:  # inside a multi-line string
                if line.count(open_string) % 2:
                    open_string = None
                continue
            header = _HEADER.match(line)
            if header:
                table = key_path(header.group(1)) or table
                self.at.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key is None:
                continue
            path = key_path(key.group(1)) or ()
            for size in range(1, len(path) + 1):
                self.at.setdefault(table + path[:size], number)
            rest = line[key.end() :]
            for quotes in ('"""', "'''"):
                if rest.count(quotes) % 2:
                    open_string = quotes

    def line_of(self, path: Sequence[str | int], item: object = None) -> int | None:
        """The line of ``path``'s key, or of the nearest enclosing one; an item's own line."""
        keys = tuple(part for part in path if isinstance(part, str))
        for size in range(len(keys), 0, -1):
            line = self.at.get(keys[:size])
            if line is not None:
                break
        else:
            return None
        if size == len(keys) and isinstance(item, str) and len(path) > len(keys):
            later = [n for n in self.at.values() if n > line]
            end = min(later, default=len(self.lines) + 1)
            for number in range(line, end):
                text = self.lines[number - 1]
                if f'"{item}"' in text or f"'{item}'" in text:
                    return number
        return line


def dotted(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            parts.append(part)
        else:
            parts.append(json.dumps(part))  # a TOML basic string, ASCII, one line
    return ".".join(parts)

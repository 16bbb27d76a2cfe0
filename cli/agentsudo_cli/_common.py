"""Options and helpers shared by the commands. Only click is imported at module level."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from agentsudo_tokens.broker.client import BrokerClient
    from agentsudo_tokens.config import Settings

# An id argument (a jti, a kid) is base64url: one in 64 starts with "-", and it may hold an
# "h". Commands taking one read an unknown "-..." as the id; only --help asks for help.
ID_ARGUMENT_COMMAND: dict[str, Any] = {
    "ignore_unknown_options": True,
    "help_option_names": ["--help"],
}

F = TypeVar("F", bound=Callable[..., Any])
JSON_META = "agentsudo.json"
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char.isprintable():
        return char
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def terminal_safe(value: object) -> str:
    """Untrusted text made safe to print on one terminal line.

    Every character that is not printable (ESC and the other C0 and C1 control
    characters, newlines, DEL, line and paragraph separators, bidi overrides and
    other format characters, unusual spaces, surrogates) becomes a backslash
    escape (``\\x1b``, ``\\n``, ``\\u202e``), so text from a token, a store
    or a file can neither start a new line (forge a row) nor drive the
    terminal. Printable text, backslashes included, is left as it is. JSON
    output needs no such help: ``json.dumps`` escapes all of these by default.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def keys_dir_option(func: F) -> F:
    """``--keys-dir``: beats AGENTSUDO_KEYS_DIR, which beats ./keys."""
    return click.option(
        "--keys-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Key directory [env AGENTSUDO_KEYS_DIR; default ./keys].",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output, errors included."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[JSON_META] = True
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=remember,
        help="Print JSON on stdout.",
    )(func)


def settings(**overrides: Any) -> Settings:
    """Settings from AGENTSUDO_* variables, with command-line flags on top."""
    from agentsudo_tokens.config import Settings

    return Settings.from_env().replace(**overrides)


def scopes_from(values: tuple[str, ...]) -> list[str]:
    """Scopes given space- or comma-separated, or repeated."""
    found: list[str] = []
    for value in values:
        found.extend(part for part in value.replace(",", " ").split(" ") if part)
    return found


def read_token(argument: str | None, current: Settings) -> str:
    """TOKEN, or ``-`` for stdin, or AGENTSUDO_TOKEN; else a usage error."""
    if argument == "-":
        token = sys.stdin.readline(64 * 1024).strip()
    elif argument:
        token = argument.strip()
    elif current.token:
        token = current.token
    else:
        raise click.UsageError("no token: give TOKEN, '-' for stdin, or set AGENTSUDO_TOKEN")
    if not token:
        raise click.UsageError("empty token")
    return token


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback: ``15m`` and friends into seconds."""
    if value is None:
        return None
    from agentsudo_tokens.config import parse_duration
    from agentsudo_tokens.errors import ConfigError

    try:
        return parse_duration(value, name=f"--{param.name}")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


def describe_remaining(seconds: float) -> str:
    """``14m 59s``-style text for a number of seconds."""
    seconds = int(seconds)
    if seconds < 0:
        return f"{describe_remaining(-seconds)} ago"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def broker_of(current: Settings, **local: object) -> BrokerClient | None:
    """The broker's client when ``AGENTSUDO_BROKER`` is set, else ``None`` (dev mode).

    ``local`` names the flags that act on a key directory or a store here
    (``keys_dir=...``, ``store=...``): given with a broker, they are a usage error,
    for the broker alone holds the keys and the state.
    """
    if current.broker is None:
        return None
    for name, value in local.items():
        if value is not None:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(
                f"{flag} is not used with AGENTSUDO_BROKER (the broker holds the keys and the "
                f"state); unset AGENTSUDO_BROKER to act on a key directory yourself"
            )
    from agentsudo_tokens.broker.client import BrokerClient

    return BrokerClient.from_settings(current)

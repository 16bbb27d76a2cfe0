"""Reading a policy's TOML text: ``parse_policy``, and ``PolicyError`` naming the line and key.

    policy = parse_policy(text, source="agentsudo.toml")
    # PolicyError: "agentsudo.toml:9: agents.SupportBot.max_ttl: expected at most 1d ..."

The schema (``policy_schema``) validates the values; this module finds where in
the text a complaint belongs (``TomlLines``), reports the first one in the file,
and lists the warnings worth showing (an agent nobody may obtain).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config import DEFAULT_AUDIENCE, DEFAULT_MAX_TTL, DEFAULT_TTL, parse_duration
from ..errors import ConfigError
from ..tokens.claims import AGENT_NAME_GRAMMAR, is_agent_name
from ._toml_lines import TomlLines, dotted
from .policy_grant import Policy
from .policy_principals import shown
from .policy_schema import AgentPolicy, BrokerSection, InvalidValue, PolicyFile, SlackSection
from .slack_config import SlackUserError, slack_config

__all__ = ["PolicyError", "parse_policy", "safe_source"]

_SYNTAX_AT = re.compile(r" \(at line (\d+), column (\d+)\)$")


class PolicyError(ConfigError):
    """A policy file that cannot be used: ``str(err)`` is ``FILE:LINE: key.path: reason``.

    ``file``, ``line`` (``None`` when no line applies) and ``key`` (the dotted path,
    or ``None``) are attributes; ``reason`` is the message without the location.
    """

    def __init__(
        self, reason: str, *, file: str, line: int | None = None, key: str | None = None
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason


_MISSING = "nothing (required)"
_DESCRIBED = {  # what a missing key should have held
    "broker": "a [broker] table with admins",
    "admins": 'an array of principals like ["uid:0", "group:sudo"]',
    "scopes": "an array of grantable scopes",
}


def _item(data: Any, path: Sequence[str | int]) -> object:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _first_error(
    exc: ValidationError, data: dict[str, Any], lines: TomlLines, source: str
) -> PolicyError:
    """The schema's complaint that comes first in the file, as a ``PolicyError``."""
    found: list[PolicyError] = []
    for error in exc.errors():
        path: list[str | int] = list(error["loc"])
        kind = error["type"]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidValue):
            if cause.index is not None:
                path.append(cause.index)
            reason = str(cause)
        elif kind == "missing":
            name = str(path[-1])
            reason = f"expected {_DESCRIBED.get(name, 'a value')}, found {_MISSING}"
        elif kind == "extra_forbidden":
            reason = f"expected one of {_known_keys(path)}, found the unknown key {shown(path[-1])}"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            reason = f"expected a table, found {shown(error.get('input'))}"
        else:  # not reached with the validators above; stay one line
            reason = " ".join(str(error.get("msg", kind)).split())
        item = _item(data, path)
        line = lines.line_of(path, item)
        found.append(PolicyError(reason, file=source, line=line, key=dotted(path)))
    # the first in the file; a missing key last (an unknown key is likelier its typo)
    found.sort(key=lambda err: (err.reason.endswith(_MISSING), err.line or 0))
    return found[0]


def _known_keys(path: Sequence[str | int]) -> str:
    model: type[BaseModel] = PolicyFile
    if path[:1] == ["broker"]:
        model = BrokerSection
    elif path[:1] == ["agents"] and len(path) > 2:
        model = AgentPolicy
    elif path[:1] == ["slack"]:
        model = SlackSection
    return ", ".join(model.model_fields)


def safe_source(text: str) -> str:
    return text if text.isprintable() else ascii(text)[1:-1]


def parse_policy(
    text: str,
    *,
    source: str = "<policy>",
    max_ttl: int = DEFAULT_MAX_TTL,
    audience: str = DEFAULT_AUDIENCE,
) -> Policy:
    """Read a policy from TOML ``text``; ``source`` names it in messages.

    :param max_ttl: the broker's maximum TTL (seconds): no ``max_ttl`` or
        ``default_ttl`` may exceed it.
    :param audience: the audience an agent gets when its policy names none.
    :raises PolicyError: the text is not TOML, or not a valid policy (one line,
        with the line number and the key).
    """
    source = safe_source(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _SYNTAX_AT.search(message)
        if at is None:
            raise PolicyError(f"not valid TOML: {message}", file=source) from None
        reason = f"not valid TOML: {message[: at.start()]} (column {at.group(2)})"
        raise PolicyError(reason, file=source, line=int(at.group(1))) from None
    lines = TomlLines(text)
    agents = data.get("agents")
    if isinstance(agents, dict):
        for name in agents:
            if not is_agent_name(name):
                raise PolicyError(
                    f"expected an agent name ({AGENT_NAME_GRAMMAR}), found {shown(name)}",
                    file=source,
                    line=lines.line_of(("agents", name)),
                    key=dotted(("agents", name)),
                )
    context = {"max_ttl": max_ttl, "audience": audience, "default_ttl": DEFAULT_TTL}
    broker = data.get("broker")
    if isinstance(broker, dict) and isinstance(broker.get("default_ttl"), str | int):
        try:  # an agent without max_ttl gets this; a bad one is the schema's to report
            context["default_ttl"] = parse_duration(broker["default_ttl"])
        except ConfigError:
            pass
    try:
        parsed = PolicyFile.model_validate(data, context=context)
    except ValidationError as exc:
        raise _first_error(exc, data, lines, source) from None
    slack = None
    if parsed.slack is not None:  # each Slack user answers as an admin, or the policy is bad
        try:
            slack = slack_config(parsed.slack, parsed.broker.admins)
        except SlackUserError as exc:
            path = ("slack", "users", exc.user)
            line = lines.line_of(path)
            raise PolicyError(str(exc), file=source, line=line, key=dotted(path)) from None
    warnings = []
    if not parsed.agents:
        warnings.append(f"{source}: no [agents.NAME] table: no token can be obtained")
    for name, rules in parsed.agents.items():
        if not rules.callers:
            line = lines.line_of(("agents", name))
            where = source if line is None else f"{source}:{line}"
            warnings.append(
                f"{where}: {dotted(('agents', name))}: no callers: nobody can obtain its tokens"
            )
    return Policy(
        admins=parsed.broker.admins,
        agents=parsed.agents,
        default_ttl=parsed.broker.default_ttl,
        warnings=tuple(warnings),
        notify=parsed.broker.notify,
        slack=slack,
        forwarders=parsed.broker.forwarders,
    )

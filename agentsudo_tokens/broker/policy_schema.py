"""The policy file's schema: pydantic models that validate each table and key.

    PolicyFile.model_validate(data, context={"max_ttl": 86400, "audience": "agentsudo",
                                             "default_ttl": 900})

``[broker]`` is a ``BrokerSection``, each ``[agents.NAME]`` an ``AgentPolicy``
(durations in seconds, principals parsed, scopes checked against the grammar).
A validator refuses a value with an ``InvalidValue``, whose ``index`` points into
a list when one item is at fault; ``policy_parse`` turns the first complaint into
a ``PolicyError`` with the file's line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..config import DEFAULT_AUDIENCE, DEFAULT_MAX_TTL, DEFAULT_TTL, parse_duration
from ..errors import ConfigError, InvalidLimitError, InvalidScopeError
from ..tokens.claims import MAX_AUDIENCES, MAX_NAME
from ..tokens.delegation import MAX_DEPTH
from ..tokens.limit_entry import concerns
from ..tokens.limits import Limits
from ..tokens.limits_text import parse_budget, parse_limit
from ..tokens.scopes import ScopeSet, covered, validate_required_scope
from .policy_principals import Principal, shown

__all__ = ["AgentPolicy", "BrokerSection", "InvalidValue", "PolicyFile", "SlackSection", "human"]


def human(seconds: int) -> str:
    """Seconds as the largest whole unit: ``90`` is ``90s``, ``3600`` is ``1h``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class InvalidValue(ValueError):
    """A value the schema refuses; ``index`` points into a list when one item is at fault."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidValue(f"expected an array of {what}, found {shown(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidValue(f"expected {what}, found {shown(item)}", index)
    return value


def _principals(value: object, what: str) -> tuple[Principal, ...]:
    items = _strings(value, "principals")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(Principal.parse(item))
        except ConfigError as exc:
            raise InvalidValue(str(exc), index) from None
    return tuple(parsed)


def _duration(value: object, info: ValidationInfo) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidValue(f"expected a duration like 15m, 1h or 900, found {shown(value)}")
    try:
        seconds = parse_duration(value)
    except ConfigError:
        raise InvalidValue(
            f"expected a duration like 15m, 1h or 900, found {shown(value)}"
        ) from None
    limit: int = (info.context or {}).get("max_ttl", DEFAULT_MAX_TTL)
    if seconds > limit:
        raise InvalidValue(
            f"expected at most {human(limit)} (the broker's maximum TTL), found {human(seconds)}"
        )
    return seconds


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _webhook(value: object) -> str:
    """A webhook URL the broker may POST to: https, or plain http to a loopback host only.

    A bad value is shown by its scheme and host alone (a webhook's path is often its secret).
    """
    from urllib.parse import urlsplit

    from ..tokens.jwks_remote import is_loopback_host

    rule = "an https:// URL (http:// only to a loopback host)"
    if not isinstance(value, str):
        raise InvalidValue(f"expected {rule}, found {shown(value)}")
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError:
        host, parts = None, None
    origin = shown(f"{parts.scheme}://{host}") if parts and host else "an unusable URL"
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidValue(f"expected {rule} in plain ASCII, found {origin}")
    if parts is None or not host or parts.username is not None or parts.password is not None:
        raise InvalidValue(
            f"expected {rule} with a host, a port if any, no credentials, found {origin}"
        )
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host)):
        return value
    raise InvalidValue(f"expected {rule}, found {origin}")


class BrokerSection(_Model):
    admins: tuple[Principal, ...]
    default_ttl: int = DEFAULT_TTL
    notify: str | None = None
    forwarders: tuple[Principal, ...] = ()  # who may forward decisions to the console's feed

    @field_validator("forwarders", mode="before")
    @classmethod
    def _forwarders(cls, value: object) -> tuple[Principal, ...]:
        return _principals(value, "forwarders")

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, value: object) -> str:
        return _webhook(value)

    @field_validator("admins", mode="before")
    @classmethod
    def _admins(cls, value: object) -> tuple[Principal, ...]:
        admins = _principals(value, "admins")
        if not admins:
            raise InvalidValue(
                "expected at least one admin (who may approve, deny, revoke), found []"
            )
        return admins

    @field_validator("default_ttl", mode="before")
    @classmethod
    def _default_ttl(cls, value: object, info: ValidationInfo) -> int:
        return _duration(value, info)


def _delegable(value: object, grantable: tuple[str, ...] | None) -> tuple[str, ...]:
    """``delegable``: ``true`` (every grantable scope), ``false``, or scopes within ``scopes``."""
    if value is True:
        return grantable or ()
    if value is False:
        return ()
    if not isinstance(value, list):
        raise InvalidValue(
            f"expected true, false or an array of grantable scopes, found {shown(value)}"
        )
    patterns = frozenset(tuple(scope.split(":")) for scope in grantable or ())
    for index, scope in enumerate(value):
        if not isinstance(scope, str):
            raise InvalidValue(f"expected a scope, found {shown(scope)}", index)
        try:
            ScopeSet.parse([scope])
        except InvalidScopeError as exc:
            raise InvalidValue(str(exc), index) from None
        if grantable is not None and not covered(tuple(scope.split(":")), patterns):
            raise InvalidValue(
                f"expected a scope within the agent's scopes ({' '.join(grantable)}), "
                f"found {scope!r}",
                index,
            )
    return tuple(dict.fromkeys(value))


def _limit_lines(value: object, scopes: tuple[str, ...] | None, parse: object) -> tuple[str, ...]:
    """``limits`` or ``budgets``: lines of the grammar, each on a scope the agent may be granted."""
    lines = _strings(value, "lines like 'write:refunds amount<=100'")
    granted = ScopeSet.parse(scopes) if scopes else None
    for index, line in enumerate(lines):
        try:
            scope = parse(line)  # type: ignore[operator]
        except InvalidLimitError as exc:
            raise InvalidValue(str(exc), index) from None
        scope = scope if isinstance(scope, str) else scope.scope
        if granted is not None and not concerns(scope, granted):
            raise InvalidValue(
                f"expected a scope the agent may be granted ({' '.join(granted.scopes)}), "
                f"found {scope!r}",
                index,
            )
    return tuple(lines)


def _entries(limits: tuple[str, ...], budgets: tuple[str, ...]) -> None:
    if not limits and not budgets:
        return
    try:
        Limits.parse(limits, budgets=budgets)
    except InvalidLimitError as exc:  # too many scopes
        raise InvalidValue(str(exc)) from None


class AgentPolicy(_Model):
    """What the policy says about one agent (validated, durations in seconds)."""

    scopes: tuple[str, ...]
    ask: tuple[str, ...] = ()
    max_ttl: int = Field(default=None, validate_default=True)
    callers: tuple[Principal, ...] = ()
    audiences: tuple[str, ...] = Field(default=None, validate_default=True)
    # Passing its grant on to sub-agents (broker.exchange): the scopes it may pass on
    # (true: every grantable scope; default none), and how many exchanges deep.
    delegable: tuple[str, ...] = ()
    max_depth: int = 1
    # Carried by every token of this agent (tokens.limits): constraints on arguments and
    # budgets per scope, the grammar of --limit and --budget. A budget is per token.
    limits: tuple[str, ...] = ()
    budgets: tuple[str, ...] = ()

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        lines = _limit_lines(value, info.data.get("scopes"), parse_limit)
        _entries(lines, ())
        return lines

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        lines = _limit_lines(value, info.data.get("scopes"), lambda line: parse_budget(line)[0])
        seen: dict[str, int] = {}
        for index, line in enumerate(lines):
            scope = parse_budget(line)[0]
            if scope in seen:
                raise InvalidValue(
                    f"expected one budget per scope (every total on one line), found a second "
                    f"for {scope} (the first is budgets[{seen[scope]}])",
                    index,
                )
            seen[scope] = index
        _entries(info.data.get("limits") or (), lines)
        return lines

    def limits_of(self) -> Limits | None:
        """Its limits and budgets as ``Limits`` (``None`` when it has neither)."""
        if not self.limits and not self.budgets:
            return None
        return Limits.parse(self.limits, budgets=self.budgets)

    @field_validator("delegable", mode="before")
    @classmethod
    def _delegable(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        return _delegable(value, info.data.get("scopes"))

    @field_validator("max_depth", mode="before")
    @classmethod
    def _max_depth(cls, value: object) -> int:
        if type(value) is not int or not 1 <= value <= MAX_DEPTH:
            raise InvalidValue(
                f"expected a whole number from 1 to {MAX_DEPTH}, found {shown(value)}"
            )
        return value

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> tuple[str, ...]:
        scopes = _strings(value, "scopes")
        if not scopes:
            raise InvalidValue("expected at least one grantable scope, found []")
        for index, scope in enumerate(scopes):
            try:
                ScopeSet.parse([scope])
            except InvalidScopeError as exc:
                raise InvalidValue(str(exc), index) from None
        try:
            return ScopeSet.parse(scopes).scopes
        except InvalidScopeError as exc:  # too many
            raise InvalidValue(str(exc)) from None

    @field_validator("ask", mode="before")
    @classmethod
    def _ask(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        asked = _strings(value, "concrete scopes")
        granted = info.data.get("scopes")
        grantable = ScopeSet.parse(granted) if granted else None
        for index, scope in enumerate(asked):
            if {"*", "**"} & set(scope.split(":")):
                raise InvalidValue(f"expected a concrete scope, found {scope!r}", index)
            try:
                validate_required_scope(scope)
            except InvalidScopeError as exc:
                raise InvalidValue(str(exc), index) from None
            if grantable is not None and grantable.allows(scope):
                raise InvalidValue(
                    f"expected a scope not also grantable in scopes (a scope is granted or "
                    f"asked for, not both), found {scope!r}",
                    index,
                )
        return tuple(dict.fromkeys(asked))

    @field_validator("max_ttl", mode="before")
    @classmethod
    def _max_ttl(cls, value: object, info: ValidationInfo) -> int:
        if value is None:  # not in the file: the broker's default TTL
            default: int = (info.context or {}).get("default_ttl", DEFAULT_TTL)
            return default
        return _duration(value, info)

    @field_validator("callers", mode="before")
    @classmethod
    def _callers(cls, value: object) -> tuple[Principal, ...]:
        return _principals(value, "callers")

    @field_validator("audiences", mode="before")
    @classmethod
    def _audiences(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        if value is None:  # not in the file
            return ((info.context or {}).get("audience", DEFAULT_AUDIENCE),)
        audiences = _strings(value, "audience names")
        if not 1 <= len(audiences) <= MAX_AUDIENCES:
            raise InvalidValue(f"expected 1 to {MAX_AUDIENCES} audiences, found {len(audiences)}")
        for index, name in enumerate(audiences):
            if not (0 < len(name) <= MAX_NAME and name.isprintable()):
                raise InvalidValue(
                    f"expected a printable name of 1 to {MAX_NAME} characters, found {shown(name)}",
                    index,
                )
        return tuple(dict.fromkeys(audiences))


def _secret_path(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise InvalidValue(f"expected the path of a file, found {shown(value)}")
    return value


class SlackSection(_Model):
    """``[slack]``: approvals answered from Slack (``broker.slack``); the users are checked
    against ``[broker] admins`` by ``policy_parse``, the files read by ``policy_load``."""

    webhook_url_file: str  # the incoming webhook's URL (a secret), broker-readable only
    signing_secret_file: str  # the app's signing secret, broker-readable only
    users: dict[str, str] = Field(default_factory=dict)  # Slack user id -> an admin

    @field_validator("webhook_url_file", "signing_secret_file", mode="before")
    @classmethod
    def _files(cls, value: object) -> str:
        return _secret_path(value)

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            raise InvalidValue(
                f"expected a table of Slack user ids to admins, found {shown(value)}"
            )
        for name, item in value.items():
            if not isinstance(item, str):
                raise InvalidValue(
                    f"expected an admin's name for {shown(name)}, found {shown(item)}"
                )
        return value


class PolicyFile(_Model):
    broker: BrokerSection
    agents: dict[str, AgentPolicy] = Field(default_factory=dict)
    slack: SlackSection | None = None

"""The broker's policy, ``agentsudo.toml``: sudoers for agents.

    policy = load_policy(Path("agentsudo.toml"))   # PolicyError: "agentsudo.toml:9: agents.X..."
    caller = Caller(uid=1001, gids=frozenset({100}), credential=None)
    grant = policy.grant(caller, "SupportBot", scopes=["read:orders"], ttl=600, audience=None)
    policy.needs_human("SupportBot", "delete:customer")   # True: one call at a time, by a human

The file (DESIGN §12)::

    [broker]
    admins = ["uid:0", "group:sudo"]        # who may approve, deny, revoke (required, not empty)
    default_ttl = "15m"                     # optional: a token's TTL when none is asked for
    notify = "https://hooks.example/..."    # optional: each elevation request POSTed here

    [agents.SupportBot]
    scopes = ["read:orders", "write:refunds"]   # what it may be granted (wildcards allowed)
    ask = ["delete:customer"]                   # concrete; granted one call at a time, by a human
    max_ttl = "1h"                              # the longest TTL; default: the broker's default_ttl
    callers = ["uid:1001", "group:users"]       # who may obtain its tokens (none: nobody)
    audiences = ["agentsudo", "billing"]        # optional; default: the issuer's audience

Principals are ``uid:N``, ``gid:N``, ``user:NAME``, ``group:NAME`` (names are resolved
to ids when the policy loads; an unknown name is an error) and ``credential:NAME``
(the subject of a credential the broker issued, over TCP). There is no wildcard
principal. Every error names the file, the line and the key; a caller asking for
more than the policy allows gets a ``PolicyRefusal`` saying what it asked and what
the policy allows that agent.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..config import DEFAULT_AUDIENCE, DEFAULT_MAX_TTL, DEFAULT_TTL, parse_duration
from ..errors import AgentSudoError, ConfigError, InvalidScopeError, PermissionDeniedError
from ..fileperms import open_trusted
from ..tokens.claims import AGENT_NAME_GRAMMAR, MAX_AUDIENCES, MAX_NAME, is_agent_name
from ..tokens.scopes import ScopeSet, validate_required_scope
from ._toml_lines import TomlLines, dotted

__all__ = [
    "AgentPolicy",
    "Caller",
    "Grant",
    "Policy",
    "PolicyError",
    "PolicyRefusal",
    "Principal",
    "RefusalReason",
    "load_policy",
    "parse_policy",
    "scope_within",
]

MAX_POLICY_BYTES = 1 << 20
_SYNTAX_AT = re.compile(r" \(at line (\d+), column (\d+)\)$")
_MAX_ID = 4294967294  # (uid_t)-1 means "no id"
_ID = re.compile(r"0|[1-9][0-9]{0,9}")
_PRINCIPAL_FORMS = "uid:N, gid:N, user:NAME, group:NAME or credential:NAME"


def _shown(value: object) -> str:
    """A value from the file or a request as short, safe, one-line text."""
    if isinstance(value, str):
        return ascii(value[:60]) + ("..." if len(value) > 60 else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    return "a table" if isinstance(value, dict) else f"a {type(value).__name__}"


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _seconds(seconds: int) -> str:
    human = _human(seconds)
    return f"{seconds}s" if human == f"{seconds}s" else f"{seconds}s ({human})"


# --- who is calling, and whom the policy names -------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who asks the broker: peer credentials on the socket, or a broker-issued credential.

    :param uid: from ``SO_PEERCRED`` on the Unix socket; ``None`` over TCP.
    :param gids: the primary and supplementary groups of ``uid``.
    :param credential: over TCP, the ``sub`` of a credential the broker issued.
    """

    uid: int | None
    gids: frozenset[int] = frozenset()
    credential: str | None = None

    def __str__(self) -> str:
        if self.uid is not None:
            return f"uid {self.uid}"
        if self.credential is not None:
            return f"credential {_shown(self.credential)}"
        return "an unidentified caller"


@dataclass(frozen=True)
class Principal:
    """One entry of ``admins`` or ``callers``: a uid, a gid or a credential's name.

    ``user:`` and ``group:`` names are resolved to ids by ``parse``; ``text`` keeps
    what the policy said (for messages).
    """

    kind: Literal["uid", "gid", "credential"]
    value: int | str
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: object) -> Principal:
        """Read ``uid:N``, ``gid:N``, ``user:NAME``, ``group:NAME`` or ``credential:NAME``.

        :raises ConfigError: another form, a wildcard, or a user or group unknown here.
        """
        if not isinstance(text, str):
            raise ConfigError(f"expected {_PRINCIPAL_FORMS}, found {_shown(text)}")
        kind, colon, rest = text.partition(":")
        if "*" in text:
            raise ConfigError(
                f"expected {_PRINCIPAL_FORMS} (no wildcard principal), found {_shown(text)}"
            )
        if not colon or kind not in ("uid", "gid", "user", "group", "credential"):
            raise ConfigError(f"expected {_PRINCIPAL_FORMS}, found {_shown(text)}")
        if kind in ("uid", "gid"):
            if _ID.fullmatch(rest) is None or int(rest) > _MAX_ID:
                raise ConfigError(
                    f"expected {kind}:N with N from 0 to {_MAX_ID}, found {_shown(text)}"
                )
            return cls("uid" if kind == "uid" else "gid", int(rest), text)
        if kind == "credential":
            if not is_agent_name(rest):
                raise ConfigError(
                    f"expected credential:NAME (a credential's subject), found {_shown(text)}"
                )
            return cls("credential", rest, text)
        try:
            if kind == "user":
                return cls("uid", pwd.getpwnam(rest).pw_uid, text)
            return cls("gid", grp.getgrnam(rest).gr_gid, text)
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            other = "uid" if kind == "user" else "gid"
            raise ConfigError(
                f"expected a {kind} that exists on this system (or {other}:N), found {_shown(text)}"
            ) from None

    def matches(self, caller: Caller) -> bool:
        """True when ``caller`` is this principal (its uid, one of its groups, its credential)."""
        if self.kind == "uid":
            return caller.uid is not None and caller.uid == self.value
        if self.kind == "gid":
            return caller.uid is not None and self.value in caller.gids
        return caller.credential is not None and caller.credential == self.value

    def __str__(self) -> str:
        return self.text or f"{self.kind}:{self.value}"


# --- errors ------------------------------------------------------------------------------


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


class RefusalReason(enum.Enum):
    """Why ``Policy.grant`` refused."""

    NOT_A_CALLER = "not_a_caller"  # also an unknown agent: the caller learns nothing more
    SCOPE = "scope"
    ASK = "ask"
    TTL = "ttl"
    AUDIENCE = "audience"


class PolicyRefusal(PermissionDeniedError):
    """A request beyond the policy; ``str(err)`` is the one-line reason, ``reason`` its kind."""

    def __init__(
        self,
        message: str,
        *,
        reason: RefusalReason,
        agent: str,
        scope: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(message, agent=agent, scope=scope, expected=expected, found=found)
        self.reason = reason


# --- scopes within scopes ----------------------------------------------------------------


def _covered(asked: tuple[str, ...], granted: frozenset[tuple[str, ...]]) -> bool:
    """Whether every concrete scope that ``asked`` matches is matched by one of ``granted``."""
    if not asked:
        return () in granted
    if ("**",) in granted:
        return True
    head = asked[0]
    if head == "**":  # one or more segments of any name: only all-wildcard patterns cover them
        exact = {len(g) for g in granted if g and set(g) <= {"*"}}
        opened = [len(g) for g in granted if g and g[-1] == "**" and set(g[:-1]) <= {"*"}]
        return bool(opened) and all(n in exact for n in range(1, min(opened)))
    # a `*` is any segment, one no pattern names among them: only `*` patterns cover it
    heads = ("*",) if head == "*" else ("*", head)
    return _covered(asked[1:], frozenset(g[1:] for g in granted if g and g[0] in heads))


def scope_within(scope: str, granted: Iterable[str]) -> bool:
    """True when every concrete scope ``scope`` matches is matched by some ``granted`` scope.

    ``read:orders`` is within ``read:*``; ``read:*`` is within ``read:*``, ``read:**``
    or ``**`` but not within ``read:orders``; ``a:**`` is within ``a:*`` and ``a:*:**``
    together.

    :raises InvalidScopeError: a scope outside the grammar.
    """
    patterns = ScopeSet.parse(list(granted))
    ScopeSet.parse([scope])
    return _covered(tuple(scope.split(":")), frozenset(tuple(g.split(":")) for g in patterns))


# --- the file's schema -------------------------------------------------------------------


class _Invalid(ValueError):
    """A value the schema refuses; ``index`` points into a list when one item is at fault."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise _Invalid(f"expected an array of {what}, found {_shown(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _Invalid(f"expected {what}, found {_shown(item)}", index)
    return value


def _principals(value: object, what: str) -> tuple[Principal, ...]:
    items = _strings(value, "principals")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(Principal.parse(item))
        except ConfigError as exc:
            raise _Invalid(str(exc), index) from None
    return tuple(parsed)


def _duration(value: object, info: ValidationInfo) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid(f"expected a duration like 15m, 1h or 900, found {_shown(value)}")
    try:
        seconds = parse_duration(value)
    except ConfigError:
        raise _Invalid(f"expected a duration like 15m, 1h or 900, found {_shown(value)}") from None
    limit: int = (info.context or {}).get("max_ttl", DEFAULT_MAX_TTL)
    if seconds > limit:
        raise _Invalid(
            f"expected at most {_human(limit)} (the broker's maximum TTL), found {_human(seconds)}"
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
        raise _Invalid(f"expected {rule}, found {_shown(value)}")
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError:
        host, parts = None, None
    shown = _shown(f"{parts.scheme}://{host}") if parts and host else "an unusable URL"
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise _Invalid(f"expected {rule} in plain ASCII, found {shown}")
    if parts is None or not host or parts.username is not None or parts.password is not None:
        raise _Invalid(f"expected {rule} with a host, a port if any, no credentials, found {shown}")
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host)):
        return value
    raise _Invalid(f"expected {rule}, found {shown}")


class _BrokerSection(_Model):
    admins: tuple[Principal, ...]
    default_ttl: int = DEFAULT_TTL
    notify: str | None = None

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, value: object) -> str:
        return _webhook(value)

    @field_validator("admins", mode="before")
    @classmethod
    def _admins(cls, value: object) -> tuple[Principal, ...]:
        admins = _principals(value, "admins")
        if not admins:
            raise _Invalid("expected at least one admin (who may approve, deny, revoke), found []")
        return admins

    @field_validator("default_ttl", mode="before")
    @classmethod
    def _default_ttl(cls, value: object, info: ValidationInfo) -> int:
        return _duration(value, info)


class AgentPolicy(_Model):
    """What the policy says about one agent (validated, durations in seconds)."""

    scopes: tuple[str, ...]
    ask: tuple[str, ...] = ()
    max_ttl: int = Field(default=None, validate_default=True)
    callers: tuple[Principal, ...] = ()
    audiences: tuple[str, ...] = Field(default=None, validate_default=True)

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> tuple[str, ...]:
        scopes = _strings(value, "scopes")
        if not scopes:
            raise _Invalid("expected at least one grantable scope, found []")
        for index, scope in enumerate(scopes):
            try:
                ScopeSet.parse([scope])
            except InvalidScopeError as exc:
                raise _Invalid(str(exc), index) from None
        try:
            return ScopeSet.parse(scopes).scopes
        except InvalidScopeError as exc:  # too many
            raise _Invalid(str(exc)) from None

    @field_validator("ask", mode="before")
    @classmethod
    def _ask(cls, value: object, info: ValidationInfo) -> tuple[str, ...]:
        asked = _strings(value, "concrete scopes")
        granted = info.data.get("scopes")
        grantable = ScopeSet.parse(granted) if granted else None
        for index, scope in enumerate(asked):
            if {"*", "**"} & set(scope.split(":")):
                raise _Invalid(f"expected a concrete scope, found {scope!r}", index)
            try:
                validate_required_scope(scope)
            except InvalidScopeError as exc:
                raise _Invalid(str(exc), index) from None
            if grantable is not None and grantable.allows(scope):
                raise _Invalid(
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
            raise _Invalid(f"expected 1 to {MAX_AUDIENCES} audiences, found {len(audiences)}")
        for index, name in enumerate(audiences):
            if not (0 < len(name) <= MAX_NAME and name.isprintable()):
                raise _Invalid(
                    f"expected a printable name of 1 to {MAX_NAME} characters, "
                    f"found {_shown(name)}",
                    index,
                )
        return tuple(dict.fromkeys(audiences))


class _PolicyFile(_Model):
    broker: _BrokerSection
    agents: dict[str, AgentPolicy] = Field(default_factory=dict)


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
        if isinstance(cause, _Invalid):
            if cause.index is not None:
                path.append(cause.index)
            reason = str(cause)
        elif kind == "missing":
            name = str(path[-1])
            reason = f"expected {_DESCRIBED.get(name, 'a value')}, found {_MISSING}"
        elif kind == "extra_forbidden":
            reason = (
                f"expected one of {_known_keys(path)}, found the unknown key {_shown(path[-1])}"
            )
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            reason = f"expected a table, found {_shown(error.get('input'))}"
        else:  # not reached with the validators above; stay one line
            reason = " ".join(str(error.get("msg", kind)).split())
        item = _item(data, path)
        line = lines.line_of(path, item)
        found.append(PolicyError(reason, file=source, line=line, key=dotted(path)))
    # the first in the file; a missing key last (an unknown key is likelier its typo)
    found.sort(key=lambda err: (err.reason.endswith(_MISSING), err.line or 0))
    return found[0]


def _known_keys(path: Sequence[str | int]) -> str:
    model: type[BaseModel] = _PolicyFile
    if path[:1] == ["broker"]:
        model = _BrokerSection
    elif path[:1] == ["agents"] and len(path) > 2:
        model = AgentPolicy
    return ", ".join(model.model_fields)


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What the policy grants one request: the token's agent, scopes, TTL and audience."""

    agent: str
    scopes: tuple[str, ...]
    ttl: int
    audience: str | tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A validated policy: admins, agents, and the decisions drawn from them.

    Build one with ``load_policy`` or ``parse_policy``. ``warnings`` are lines
    worth showing (an agent nobody may obtain), never reasons to refuse.
    """

    admins: tuple[Principal, ...]
    agents: Mapping[str, AgentPolicy]
    default_ttl: int = DEFAULT_TTL
    warnings: tuple[str, ...] = ()
    notify: str | None = field(default=None, repr=False)  # a webhook for elevation requests
    _grantable: Mapping[str, frozenset[tuple[str, ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", MappingProxyType(dict(self.agents)))
        grantable = {
            name: frozenset(tuple(scope.split(":")) for scope in rules.scopes)
            for name, rules in self.agents.items()
        }
        object.__setattr__(self, "_grantable", MappingProxyType(grantable))

    def is_admin(self, caller: Caller) -> bool:
        """True when ``caller`` may approve, deny and revoke."""
        return any(admin.matches(caller) for admin in self.admins)

    def needs_human(self, agent: str, scope: str) -> bool:
        """True when ``scope`` is one of ``agent``'s ``ask`` scopes (a human grants each call)."""
        rules = self.agents.get(agent)
        return rules is not None and scope in rules.ask

    def grant(
        self,
        caller: Caller,
        agent: str,
        *,
        scopes: Sequence[str] | None,
        ttl: int | None,
        audience: str | Sequence[str] | None,
    ) -> Grant:
        """Decide a token request: what ``caller`` gets for ``agent``, or why not.

        ``scopes=None`` asks for every grantable scope, ``ttl=None`` for the
        default TTL (at most the agent's ``max_ttl``), ``audience=None`` for the
        agent's audiences. A caller that may not obtain the agent's tokens learns
        nothing about its policy (an unknown agent reads the same).

        :raises PolicyRefusal: the request is beyond the policy.
        :raises ConfigError: a malformed agent name, TTL or audience.
        :raises InvalidScopeError: a scope outside the grammar, or none.
        """
        if not is_agent_name(agent):
            raise ConfigError(f"agent: expected an agent name, found {_shown(agent)}")
        rules = self.agents.get(agent)
        if rules is None or not any(principal.matches(caller) for principal in rules.callers):
            raise PolicyRefusal(
                f"{caller} may not obtain tokens for agent {agent!r}",
                reason=RefusalReason.NOT_A_CALLER,
                agent=agent,
                found=str(caller),
            )
        return Grant(
            agent,
            self._scopes(agent, rules, scopes),
            self._ttl(agent, rules, ttl),
            self._audience(agent, rules, audience),
        )

    def _scopes(
        self, agent: str, rules: AgentPolicy, scopes: Sequence[str] | None
    ) -> tuple[str, ...]:
        if scopes is None:
            return rules.scopes
        asked = ScopeSet.parse(scopes)
        if not asked.scopes:
            raise InvalidScopeError("expected at least one scope, found none", expected=">=1")
        grantable = self._grantable[agent]
        for scope in asked:
            if scope in rules.ask:
                raise PolicyRefusal(
                    f"agent {agent!r}: {scope!r} is granted one call at a time by a human "
                    "(ask), never in a token",
                    reason=RefusalReason.ASK,
                    agent=agent,
                    scope=scope,
                )
            if not _covered(tuple(scope.split(":")), grantable):
                raise PolicyRefusal(
                    f"agent {agent!r} may not be granted {scope!r}; "
                    f"its policy grants {' '.join(rules.scopes)}",
                    reason=RefusalReason.SCOPE,
                    agent=agent,
                    scope=scope,
                    expected=rules.scopes,
                    found=scope,
                )
        return asked.scopes

    def _ttl(self, agent: str, rules: AgentPolicy, ttl: int | None) -> int:
        if ttl is None:
            return min(self.default_ttl, rules.max_ttl)
        if type(ttl) is not int or ttl <= 0:
            raise ConfigError(f"ttl: expected a positive number of seconds, found {_shown(ttl)}")
        if ttl > rules.max_ttl:
            raise PolicyRefusal(
                f"agent {agent!r} may not be granted a TTL of {_seconds(ttl)}; "
                f"its policy's max_ttl is {_seconds(rules.max_ttl)}",
                reason=RefusalReason.TTL,
                agent=agent,
                expected=rules.max_ttl,
                found=ttl,
            )
        return ttl

    def _audience(
        self, agent: str, rules: AgentPolicy, audience: str | Sequence[str] | None
    ) -> str | tuple[str, ...]:
        if audience is None:
            chosen = rules.audiences
        else:
            items = (audience,) if isinstance(audience, str) else tuple(audience)
            if not items or not all(isinstance(item, str) for item in items):
                raise ConfigError(
                    f"audience: expected a name or a list of names, found {_shown(audience)}"
                )
            for item in items:
                if item not in rules.audiences:
                    allowed = ", ".join(_shown(name) for name in rules.audiences)
                    raise PolicyRefusal(
                        f"agent {agent!r} may not be granted audience {_shown(item)}; "
                        f"its policy allows {allowed}",
                        reason=RefusalReason.AUDIENCE,
                        agent=agent,
                        expected=rules.audiences,
                        found=item,
                    )
            chosen = tuple(dict.fromkeys(items))
        return chosen[0] if len(chosen) == 1 else chosen


def _safe(text: str) -> str:
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
    source = _safe(source)
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
                    f"expected an agent name ({AGENT_NAME_GRAMMAR}), found {_shown(name)}",
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
        parsed = _PolicyFile.model_validate(data, context=context)
    except ValidationError as exc:
        raise _first_error(exc, data, lines, source) from None
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
    )


def load_policy(
    path: Path, *, max_ttl: int = DEFAULT_MAX_TTL, audience: str = DEFAULT_AUDIENCE
) -> Policy:
    """Read and validate the policy file at ``path`` (see ``parse_policy``).

    The file, and the directory holding it, must not be writable by group or
    others, and the file must belong to root or to this user (a caller that can
    edit the policy could grant itself anything).

    :raises PolicyError: unreadable, writable by others, too large, not UTF-8
        TOML, or not a valid policy.
    """
    source = str(path)
    try:
        with open_trusted(path, what="policy") as handle:
            owner = os.fstat(handle.fileno()).st_uid
            if owner not in (0, os.geteuid()):  # as sudo wants sudoers owned by root
                raise PolicyError(
                    f"the policy belongs to uid {owner}: it must belong to root or to the "
                    f"broker's own user (uid {os.geteuid()}), or its owner could grant itself "
                    "anything",
                    file=_safe(source),
                )
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        reason = f"cannot read the policy: {exc.strerror or exc}"
        raise PolicyError(reason, file=_safe(source)) from None
    except AgentSudoError as exc:
        raise PolicyError(str(exc), file=_safe(source)) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"expected at most {MAX_POLICY_BYTES} bytes", file=_safe(source))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError("expected UTF-8 text", file=_safe(source), line=line) from None
    return parse_policy(text, source=source, max_ttl=max_ttl, audience=audience)

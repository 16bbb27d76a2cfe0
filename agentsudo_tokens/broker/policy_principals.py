"""Who calls the broker (``Caller``) and whom its policy names (``Principal``).

    caller = Caller(uid=1001, gids=frozenset({100}))
    Principal.parse("group:users").matches(caller)     # True when gid 100 is "users"

Principals are ``uid:N``, ``gid:N``, ``user:NAME``, ``group:NAME`` (resolved to
ids when parsed; an unknown name is an error) and ``credential:NAME``. There is
no wildcard principal.
"""

from __future__ import annotations

import grp
import pwd
import re
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..tokens.claims import is_agent_name

__all__ = ["Caller", "Principal", "shown"]

_MAX_ID = 4294967294  # (uid_t)-1 means "no id"
_ID = re.compile(r"0|[1-9][0-9]{0,9}")
_PRINCIPAL_FORMS = "uid:N, gid:N, user:NAME, group:NAME or credential:NAME"


def shown(value: object) -> str:
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
            return f"credential {shown(self.credential)}"
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
            raise ConfigError(f"expected {_PRINCIPAL_FORMS}, found {shown(text)}")
        kind, colon, rest = text.partition(":")
        if "*" in text:
            raise ConfigError(
                f"expected {_PRINCIPAL_FORMS} (no wildcard principal), found {shown(text)}"
            )
        if not colon or kind not in ("uid", "gid", "user", "group", "credential"):
            raise ConfigError(f"expected {_PRINCIPAL_FORMS}, found {shown(text)}")
        if kind in ("uid", "gid"):
            if _ID.fullmatch(rest) is None or int(rest) > _MAX_ID:
                raise ConfigError(
                    f"expected {kind}:N with N from 0 to {_MAX_ID}, found {shown(text)}"
                )
            return cls("uid" if kind == "uid" else "gid", int(rest), text)
        if kind == "credential":
            if not is_agent_name(rest):
                raise ConfigError(
                    f"expected credential:NAME (a credential's subject), found {shown(text)}"
                )
            return cls("credential", rest, text)
        try:
            if kind == "user":
                return cls("uid", pwd.getpwnam(rest).pw_uid, text)
            return cls("gid", grp.getgrnam(rest).gr_gid, text)
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            other = "uid" if kind == "user" else "gid"
            raise ConfigError(
                f"expected a {kind} that exists on this system (or {other}:N), found {shown(text)}"
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

"""The policy's ``[slack]`` table, resolved: who may answer from Slack, and the two secrets.

    [slack]
    webhook_url_file = "/etc/agentsudo/slack-webhook"          # mode 0600, the broker's user
    signing_secret_file = "/etc/agentsudo/slack-signing-secret"
    users = { U0123ABC = "alice" }                               # Slack user id -> an admin

    slack = slack_config(section, admins)          # at parse: each user must be an admin
    slack = slack.with_secrets(Path("/etc/agentsudo"))   # at load: both files read

A user maps to one person among ``[broker] admins``: ``uid:N``, ``user:NAME``,
``credential:NAME``, or a bare ``NAME`` that stands for ``credential:NAME`` when
the admins name that credential, else for ``user:NAME``. A group is not a person:
``user:alice`` is an admin through ``group:sudo`` if alice is in sudo. A secret
file must belong to root or to the broker's user and be readable by nobody else
(as a private key in the key directory); a relative path is taken from the
policy's directory.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigError
from ..fileperms import open_trusted
from .policy_principals import Caller, Principal, shown
from .policy_schema import SlackSection, _webhook

__all__ = [
    "MAX_SECRET_BYTES",
    "SlackAdmin",
    "SlackConfig",
    "SlackSecretError",
    "SlackUserError",
    "slack_config",
]

MAX_SECRET_BYTES = 4096
MIN_SECRET = 16  # characters of a signing secret (Slack's are 32)
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,31}")


class SlackUserError(ConfigError):
    """An entry of ``[slack] users`` that is not an admin; ``user`` names the entry."""

    def __init__(self, message: str, *, user: str) -> None:
        super().__init__(message)
        self.user = user


def _groups_of(uid: int) -> frozenset[int]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    try:
        return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        return frozenset({entry.pw_gid})


@dataclass(frozen=True)
class SlackAdmin:
    """The admin a Slack user answers as: ``name`` as shown ("alice"), and who that is."""

    slack_user: str
    name: str
    principal: Principal  # kind "uid" or "credential": one person

    def caller(self) -> Caller:
        """The admin as a caller of the broker, groups read now (for ``Policy.is_admin``)."""
        if self.principal.kind == "uid":
            uid = int(self.principal.value)
            return Caller(uid=uid, gids=_groups_of(uid))
        return Caller(uid=None, credential=str(self.principal.value))


def _is_admin(caller: Caller, admins: Sequence[Principal]) -> bool:
    return any(admin.matches(caller) for admin in admins)


def _admin_of(slack_user: str, value: str, admins: Sequence[Principal]) -> SlackAdmin:
    """The admin ``value`` names, for ``slack_user``; ``SlackUserError`` otherwise."""
    if _SLACK_USER.fullmatch(slack_user) is None:
        raise SlackUserError(
            f"expected a Slack user id like U0123ABC, found {shown(slack_user)}", user=slack_user
        )
    forms = [value] if ":" in value else [f"credential:{value}", f"user:{value}"]
    if ":" not in value and f"credential:{value}" not in {str(admin) for admin in admins}:
        forms = forms[1:]  # a bare name is a credential only where the admins say so
    reasons = []
    for form in forms:
        try:
            principal = Principal.parse(form)
        except ConfigError as exc:
            reasons.append(str(exc))
            continue
        if principal.kind == "gid":
            reasons.append(f"expected one person (uid, user or credential), found {shown(form)}")
            continue
        name = form.partition(":")[2] if form.startswith(("user:", "credential:")) else form
        admin = SlackAdmin(slack_user, name, principal)
        if _is_admin(admin.caller(), admins):
            return admin
        reasons.append(f"{shown(form)} is not in [broker] admins")
    raise SlackUserError(
        f"expected an admin of [broker] admins, found {shown(value)}: {reasons[-1]}",
        user=slack_user,
    )


@dataclass(frozen=True)
class SlackConfig:
    """``[slack]`` resolved: users to admins, the secret files, and once read, the secrets."""

    webhook_url_file: str
    signing_secret_file: str
    users: Mapping[str, SlackAdmin]
    webhook_url: str | None = field(default=None, repr=False)  # its path is a secret
    signing_secret: bytes | None = field(default=None, repr=False)

    def with_secrets(self, base: Path) -> SlackConfig:
        """This, with both files read (a relative path from ``base``).

        :raises SlackSecretError: a file unreadable, readable by others, or not as expected.
        """
        url = _read_secret(base / self.webhook_url_file, "webhook_url_file")
        try:
            _webhook(url)
        except ValueError as exc:
            raise SlackSecretError(f"the URL it holds: {exc}", key="webhook_url_file") from None
        secret = _read_secret(base / self.signing_secret_file, "signing_secret_file")
        if len(secret) < MIN_SECRET:
            raise SlackSecretError(
                f"expected a signing secret of at least {MIN_SECRET} characters, "
                f"found {len(secret)}",
                key="signing_secret_file",
            )
        return replace(self, webhook_url=url, signing_secret=secret.encode("ascii"))


class SlackSecretError(ConfigError):
    """A ``[slack]`` secret file that cannot be used; ``key`` names its key."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


def _read_secret(path: Path, key: str) -> str:
    """One line of printable ASCII from ``path``, a file only its owner may read."""
    what = f"slack {key}"
    try:
        with open_trusted(path, what=what) as handle:
            info = os.fstat(handle.fileno())
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise SlackSecretError(
                    f"{path} is readable by others (mode {mode:04o}); expected 0600 or 0400: "
                    "run chmod 600 on it",
                    key=key,
                )
            if info.st_uid not in (0, os.geteuid()):
                raise SlackSecretError(
                    f"{path} belongs to uid {info.st_uid}: expected root or the broker's own "
                    f"user (uid {os.geteuid()})",
                    key=key,
                )
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SlackSecretError(f"cannot read {path}: {exc.strerror or exc}", key=key) from None
    except SlackSecretError:
        raise
    except ConfigError as exc:  # writable by others, or its directory
        raise SlackSecretError(str(exc), key=key) from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SlackSecretError(f"{path}: expected at most {MAX_SECRET_BYTES} bytes", key=key)
    text = raw.decode("ascii", "replace").strip()
    if not text or not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise SlackSecretError(f"{path}: expected one line of printable ASCII", key=key)
    return text


def slack_config(section: SlackSection, admins: Sequence[Principal]) -> SlackConfig:
    """``[slack]`` with each user resolved to an admin (the secrets not read yet).

    :raises SlackUserError: a user id outside Slack's form, or one that maps to no admin.
    """
    users = {user: _admin_of(user, value, admins) for user, value in section.users.items()}
    return SlackConfig(
        webhook_url_file=section.webhook_url_file,
        signing_secret_file=section.signing_secret_file,
        users=MappingProxyType(users),
    )

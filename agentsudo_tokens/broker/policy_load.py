"""Loading the policy file: ``load_policy`` reads it only if no one else could have written it.

    policy = load_policy(Path("/etc/agentsudo/agentsudo.toml"), max_ttl=86400)

The file, and the directory holding it, must not be writable by group or others,
and the file must belong to root or to the broker's own user (as sudo wants
sudoers owned by root): a caller that can edit the policy could grant itself
anything. What the file says is read by ``parse_policy``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import DEFAULT_AUDIENCE, DEFAULT_MAX_TTL
from ..errors import AgentSudoError
from ..fileperms import open_trusted
from .policy_grant import Policy
from .policy_parse import PolicyError, parse_policy, safe_source

__all__ = ["MAX_POLICY_BYTES", "load_policy"]

MAX_POLICY_BYTES = 1 << 20


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
                    file=safe_source(source),
                )
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        reason = f"cannot read the policy: {exc.strerror or exc}"
        raise PolicyError(reason, file=safe_source(source)) from None
    except PolicyError:
        raise  # it names the file already
    except AgentSudoError as exc:
        raise PolicyError(str(exc), file=safe_source(source)) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"expected at most {MAX_POLICY_BYTES} bytes", file=safe_source(source))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError("expected UTF-8 text", file=safe_source(source), line=line) from None
    policy = parse_policy(text, source=source, max_ttl=max_ttl, audience=audience)
    if policy.slack is not None:  # its secret files, read as the broker reads them
        policy = _with_slack_secrets(policy, path, text)
    return policy


def _with_slack_secrets(policy: Policy, path: Path, text: str) -> Policy:
    """``policy`` with ``[slack]``'s secret files read (relative to the policy's directory).

    :raises PolicyError: a file unreadable, readable by others, or not as expected.
    """
    import dataclasses

    from ._toml_lines import TomlLines, dotted
    from .slack_config import SlackSecretError

    assert policy.slack is not None
    try:
        slack = policy.slack.with_secrets(path.absolute().parent)
    except SlackSecretError as exc:
        key = ("slack", exc.key)
        line = TomlLines(text).line_of(key)
        raise PolicyError(
            str(exc), file=safe_source(str(path)), line=line, key=dotted(key)
        ) from None
    return dataclasses.replace(policy, slack=slack)

"""What the console keeps in the broker process: the feed, the chain's state, its address."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ...errors import ConfigError
from .chain import ChainState
from .feed import Feed
from .minted import MintedCache

__all__ = ["ConsoleState", "public_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def public_origin(value: str) -> str:
    """``--public-url``: an http(s) origin, as a browser sends it in ``Origin``
    (``https://console.example.com``; lower case, no default port, nothing after it).

    :raises ConfigError: anything else (a path, a query, a user, not http(s)).
    """
    expected = "expected --public-url as http(s)://HOST[:PORT] and nothing after it"
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{expected}, found {value!r}") from None
    if (
        not text.isascii()
        or parts.scheme.lower() not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
        or "@" in parts.netloc
    ):
        raise ConfigError(f"{expected}, found {value!r}")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        shown += f":{port}"
    return f"{scheme}://{shown}"


class ConsoleState:
    """The live feed and the audit chain's last report, for the broker's audit file.

    ``base_url`` is where the console is reached (``http://host:port``), set when the
    broker listens on TCP; the links ``agentsudo console`` prints start with it.
    ``public_url`` (``--public-url``, behind a TLS proxy) is the origin browsers use:
    the links start with it, a form's ``Origin`` must be it, and with https the
    session cookie is ``Secure``.
    """

    def __init__(self, audit_path: Path, public_url: str | None = None) -> None:
        self.feed = Feed(audit_path)
        self.chain = ChainState(audit_path)
        self.minted = MintedCache()  # the agents page's live tokens, read once a second
        self.public_url = None if public_url is None else public_origin(public_url)
        self.base_url: str | None = self.public_url

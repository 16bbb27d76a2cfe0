"""What the console keeps in the broker process: the feed, the chain's state, its address."""

from __future__ import annotations

from pathlib import Path

from .chain import ChainState
from .feed import Feed

__all__ = ["ConsoleState"]


class ConsoleState:
    """The live feed and the audit chain's last report, for the broker's audit file.

    ``base_url`` is where the console is reached (``http://host:port``), set when the
    broker listens on TCP; the links ``agentsudo console`` prints start with it.
    """

    def __init__(self, audit_path: Path) -> None:
        self.feed = Feed(audit_path)
        self.chain = ChainState(audit_path)
        self.base_url: str | None = None

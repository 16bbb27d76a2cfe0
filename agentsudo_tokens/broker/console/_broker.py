"""What the console needs of the broker: a protocol, so the console never imports ``app``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ...config import Settings
    from ...state import Store
    from ...tokens.keydir import KeyDirectory
    from ..audit import BrokerAudit
    from ..audit_anchor import AuditAnchor
    from ..devmode import DevPolicy
    from ..policy import Policy
    from ..ratelimit import QuietRefusals
    from .state import ConsoleState


class ConsoleBroker(Protocol):
    """The broker's parts the console reads and acts through (``app._Broker`` is one)."""

    settings: Settings
    store: Store
    policy: Policy | DevPolicy
    audit: BrokerAudit
    anchor: AuditAnchor
    keys: KeyDirectory
    quiet: QuietRefusals
    console: ConsoleState

"""What an approver sees of a guarded call: the function and its arguments by name.

    def small_refunds_only(agent, scope, context: ApprovalContext) -> bool:
        return context.arguments["amount"] < 100

A leaf shared by ``decision`` (which builds one for each approval) and
``elevation`` (which files it as a request); ``decision`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["ApprovalContext"]


@dataclass(frozen=True)
class ApprovalContext(Mapping[str, Any]):
    """What an approver sees of the call: the function and its arguments by name.

    Also readable as a mapping (``context["function"]``, ``context["args"]``,
    ``context["kwargs"]``), as the original library passed it.
    """

    function: str
    arguments: Mapping[str, Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    reason: str = "not granted"

    def __getitem__(self, key: str) -> Any:
        if key in ("function", "arguments", "args", "kwargs", "reason"):
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("function", "arguments", "args", "kwargs", "reason"))

    def __len__(self) -> int:
        return 5

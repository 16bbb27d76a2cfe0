"""What an approver sees of a guarded call: the function and its arguments by name.

    def small_refunds_only(agent, scope, context: ApprovalContext) -> bool:
        return context.arguments["amount"] < 100

For a call over a limit of the token, ``reason`` is the refusal in one line
(``amount 5000 exceeds the token's limit 100 for write:refunds``), ``limit``
the limit hit and ``argument`` the argument it reads; for a missing scope,
``reason`` is ``"not granted"`` and both are ``None``.

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
    limit: str | None = None  # over a limit of the token: which (``amount<=100``), else None
    argument: str | None = None  # and the argument it reads (its value is in ``arguments``)

    def __getitem__(self, key: str) -> Any:
        if key in ("function", "arguments", "args", "kwargs", "reason"):
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("function", "arguments", "args", "kwargs", "reason"))

    def __len__(self) -> int:
        return 5

"""Delegation from a running agent: its own token exchanged at the broker for a narrower one.

    child = current_agent().delegate("Summarizer", scopes=["read:orders"], ttl=300)
    with child.start_session():          # the sub-agent acts with the delegated token
        summarize()

``Agent.delegate`` calls ``exchange_token`` here: an RFC 8693 token exchange
(``broker.exchange``) at ``AGENTSUDO_BROKER`` (or the client given), with the
agent's token as the credential. The broker decides: scopes, audience and
lifetime within the token's, as deep and as passable as the root agent's policy
allows; a refusal is a ``DelegationRefusedError`` naming its rule. The child
carries the token's limits that may apply to its scopes and any narrower ones
asked (``limits=``); its budgets (``budgets=``) are carved out of the token's:

    child = agent.delegate("Refunder", scopes=["write:refunds"],
                           limits=["write:refunds amount<=50"],
                           budgets=["write:refunds amount=100 calls=5"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ConfigError
from ..tokens.claims import check_agent_name
from ..tokens.scopes import ScopeSet

if TYPE_CHECKING:
    from ..broker.client import BrokerClient

__all__ = ["exchange_token"]


def exchange_token(
    token: str | None,
    agent: str,
    name: str | None,
    *,
    scopes: Sequence[str] | str | None,
    ttl: int | None,
    audience: str | Sequence[str] | None,
    broker: BrokerClient | None,
    limits: Sequence[str] | None = None,
    budgets: Sequence[str] | None = None,
) -> str:
    """The token a sub-agent ``name`` gets from ``agent``'s ``token`` by exchange.

    ``limits`` and ``budgets`` (grammar lines) narrow the child further; its budgets
    are carved out of what the token's have left (``BrokerClient.exchange``).

    :raises ConfigError: an unsigned agent, a bad sub-agent name, or no broker.
    :raises InvalidScopeError: a scope outside the grammar.
    :raises InvalidLimitError: a limit or budget line outside the grammar.
    :raises DelegationRefusedError: the broker refuses (beyond the token or the policy).
    :raises InvalidTokenError: the broker refuses the token itself (expired, revoked).
    """
    if token is None:
        raise ConfigError(
            f"agent {agent!r} is an unsigned in-process agent: only an agent of a verified "
            "token can delegate (a token exchange at the broker)",
            expected="a signed agent",
            found="unsigned",
        )
    if name is not None:
        check_agent_name(name, "sub-agent")
    asked = None if scopes is None else list(ScopeSet.parse(scopes).scopes)
    if broker is None:
        from ..broker.client import BrokerClient

        settings = Settings.from_env()
        if settings.broker is None:
            raise ConfigError(
                "delegation is a token exchange at the broker: set AGENTSUDO_BROKER "
                "(on a laptop: agentsudo serve --dev)",
                expected="AGENTSUDO_BROKER",
                found=None,
            )
        broker = BrokerClient.from_settings(settings)
    names = (
        None if audience is None else [audience] if isinstance(audience, str) else list(audience)
    )
    answer = broker.exchange(
        token, actor=name, scopes=asked, audience=names, ttl=ttl, limits=limits, budgets=budgets
    )
    return str(answer["access_token"])

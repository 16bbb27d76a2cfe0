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
    delegable = ["read:*"]                      # optional: scopes it may pass on to sub-agents
                                                # (true: all of scopes); default: none
    max_depth = 2                               # optional: exchanges deep (1 to 8); default 1
    limits = ["write:refunds amount<=100"]      # optional: constraints every token carries
    budgets = ["write:refunds amount=500 calls=20"]  # optional: budgets every token carries

``limits`` and ``budgets`` take the grammar of ``--limit`` and ``--budget``
(``tokens.limits_text``), on scopes the agent may be granted. A token carries
those that may apply to its scopes, then any narrower ones its caller asks for
(``agentsudo issue --limit/--budget``; a looser bound or a bigger budget than
the policy's is refused). A budget is per token: a fresh token has a fresh
budget, which is why issuance is rate-limited per caller; a sub-agent's budget
is carved out of its parent's remainder at exchange (``broker.exchange``).

Principals are ``uid:N``, ``gid:N``, ``user:NAME``, ``group:NAME`` (names are resolved
to ids when the policy loads; an unknown name is an error) and ``credential:NAME``
(the subject of a credential the broker issued, over TCP). There is no wildcard
principal. Every error names the file, the line and the key; a caller asking for
more than the policy allows gets a ``PolicyRefusal`` saying what it asked and what
the policy allows that agent.

The pieces, one job each: ``policy_principals`` (``Caller``, ``Principal``),
``policy_schema`` (the pydantic models), ``policy_parse`` (TOML text to a
``Policy``, ``PolicyError``), ``policy_load`` (the file and its owner check),
``policy_grant`` (``Policy.grant`` and ``PolicyRefusal``), ``policy_scopes``
(``scope_within``). Import them from here.
"""

from __future__ import annotations

from .policy_grant import Grant, Policy, PolicyRefusal, RefusalReason
from .policy_load import MAX_POLICY_BYTES as MAX_POLICY_BYTES
from .policy_load import load_policy
from .policy_parse import PolicyError, parse_policy
from .policy_principals import Caller, Principal
from .policy_schema import AgentPolicy
from .policy_scopes import scope_within

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

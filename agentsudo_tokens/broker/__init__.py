"""The broker: the one program that holds the signing key, the policy and the state.

    agentsudo serve --policy agentsudo.toml --keys-dir /var/lib/agentsudo/keys \
        --socket /run/agentsudo/broker.sock

Agents and launchers ask it for tokens (``AGENTSUDO_BROKER=unix:///run/agentsudo/broker.sock``);
it decides by the policy and by who is calling (``SO_PEERCRED`` on its socket), as
``sudo`` decides by sudoers and the caller's uid. Nothing here is imported by
``import agentsudo_tokens``.
"""

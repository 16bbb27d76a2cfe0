"""In-process enforcement: agents and sessions, ``@sudo``, decisions, elevation, propagation.

    from agentsudo_tokens.guard.sudo import sudo

A user of ``tokens``, ``state`` and ``audit``; asking for an elevation with
``AGENTSUDO_BROKER`` set is a client of the broker. The core never imports an
integration: an integration registers its adapter (``guard.sudo``).
"""

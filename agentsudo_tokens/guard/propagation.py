"""Carry the acting agent across threads and processes.

    with Agent.from_token(token).start_session():
        subprocess.run(["python", "worker.py"], env=agent_env())   # the child's ambient agent

        with ContextThreadPoolExecutor() as pool:                   # workers act as this agent
            pool.map(process_refund, orders)

        threading.Thread(target=copy_session(sync_ledger)).start()

A session lives in a ``ContextVar``, so a new thread starts with none: a plain
``ThreadPoolExecutor`` or ``loop.run_in_executor`` runs its tasks with no
session (``asyncio.to_thread`` copies the context already): as the process's
ambient agent, if any, and in a process that serves requests as no agent at
all. These helpers copy the submitter's context into the worker.
``current_token()`` is the token to send elsewhere; the httpx helper
(``integrations.httpx``) sends it as a Bearer header.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from ..config import Settings, child_environment
from ..errors import PermissionDeniedError
from .agent import _policy, current_agent

__all__ = ["ContextThreadPoolExecutor", "agent_env", "copy_session", "current_token"]

P = ParamSpec("P")
R = TypeVar("R")


def current_token() -> str:
    """The acting agent's token, to pass on to a child process or a service.

    :raises PermissionDeniedError: no agent is acting, the agent is an unsigned
        in-process one (it has no token), or ``AGENTSUDO_TOKEN`` is refused.
    """
    agent = current_agent()
    if agent is None:
        raise PermissionDeniedError(
            "no active agent session to pass on; " + _policy.no_session_hint(),
            expected="a session from a verified token",
            found="no session",
        )
    token = agent.token
    if token is None:
        raise PermissionDeniedError(
            f"agent {agent.name!r} is an unsigned in-process agent and has no token to pass on",
            agent=agent.name,
            expected="a session from a verified token",
            found="in-process agent",
        )
    return token


def agent_env(*, jwks: str | None = None) -> dict[str, str]:
    """The environment for a child process that acts as the current agent.

    This process's environment with ``AGENTSUDO_TOKEN`` set to the acting
    agent's token (replacing any inherited one), ``AGENTSUDO_JWKS`` pointing at
    the public keys and ``AGENTSUDO_STORE`` at the state (revocations), both
    absolute, so ``@sudo`` in the child checks the same token from any directory.

    :param jwks: the public keys for the child, when ``AGENTSUDO_JWKS`` is not
        set here; default the key directory's ``jwks.json``.
    :raises PermissionDeniedError: as ``current_token``.
    """
    from ..state import default_store_url

    token = current_token()
    settings = Settings.from_env()
    state = default_store_url(settings)  # where this process reads revocations
    return child_environment(token, jwks=jwks or settings.jwks_source, store=state)


def copy_session(func: Callable[P, R]) -> Callable[P, R]:
    """Bind ``func`` to the current context: wherever it runs, the caller's session is active.

    The context is captured now; each call runs in its own copy of it, so the
    result may run in several threads at once (``pool.map(copy_session(f), items)``).
    """
    captured = contextvars.copy_context()

    @functools.wraps(func)
    def in_session(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(func, *args, **kwargs)

    return in_session


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in their submitter's context.

    Each ``submit`` (and so each item of ``map``) captures the submitting
    thread's context, so the worker acts as the agent whose session submitted it.
    """

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)

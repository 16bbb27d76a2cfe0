"""Who is on the other end of a Unix socket: the kernel says (``SO_PEERCRED``), not the caller.

    config = uvicorn.Config(app, http=PeerH11Protocol)     # every request's scope then has
    scope["extensions"]["agentsudo.peer"]                  # Peer(pid, uid, gid), on a Unix socket

uvicorn takes the HTTP protocol class as a setting; this one reads the peer's
credentials once per connection, when the kernel hands it over, and wraps the
app for that connection so each request's ASGI scope carries them. A TCP
connection carries none: over TCP the caller proves who it is with a
credential the broker issued (see ``broker.app``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["PEER_KEY", "Peer", "PeerH11Protocol", "peer_of"]

PEER_KEY = "agentsudo.peer"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a Unix socket, as the kernel recorded it at connect()."""

    pid: int
    uid: int
    gid: int


def _read_peer(transport: asyncio.BaseTransport) -> Peer | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid, uid, gid)


class _WithPeer:
    """The app, for one connection: each request's scope gets that connection's peer."""

    def __init__(self, app: Any, peer: Peer) -> None:
        self.app = app
        self.peer = peer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions[PEER_KEY] = self.peer
        await self.app({**scope, "extensions": extensions}, receive, send)


class PeerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the peer credentials of a Unix-socket connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = _read_peer(transport)
        if peer is not None:
            self.app = _WithPeer(self.app, peer)


def peer_of(scope: Any) -> Peer | None:
    """The Unix-socket peer of a request, or ``None`` (TCP, or a server without this protocol)."""
    found = (scope.get("extensions") or {}).get(PEER_KEY)
    return found if isinstance(found, Peer) else None

"""Who is on the other end of a Unix socket: the kernel says (``SO_PEERCRED``), not the caller.

    config = uvicorn.Config(app, http=PeerH11Protocol)     # every request's scope then has
    scope["extensions"]["agentsudo.peer"]                  # Peer(pid, uid, gid), on a Unix socket
    uvicorn.Config(app, http=peer_protocol(header_timeout=10, per_peer=16))   # and guarded

uvicorn takes the HTTP protocol class as a setting; this one reads the peer's
credentials once per connection, when the kernel hands it over, and wraps the
app for that connection so each request's ASGI scope carries them. A TCP
connection carries none: over TCP the caller proves who it is with a
credential the broker issued (see ``broker.app``).

uvicorn's ``limit_concurrency`` counts connections, and nothing times out a
connection that never finishes its first request, so one caller holding idle
sockets would make every other caller's requests 503. ``peer_protocol`` guards
against that: a connection must deliver a complete request head within
``header_timeout`` seconds of being made (or of its previous response), and one
peer (a uid on the socket, an address on TCP, a /64 for IPv6) holds at most
``per_peer`` connections at once; the next is answered 429 and closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HEADER_TIMEOUT",
    "PEER_CONNECTIONS",
    "PEER_KEY",
    "Peer",
    "PeerH11Protocol",
    "TCP_CONNECTIONS",
    "peer_of",
    "peer_protocol",
]

PEER_KEY = "agentsudo.peer"
HEADER_TIMEOUT = 10.0  # seconds for a request head, from connect or from the previous response
PEER_CONNECTIONS = 16  # connections one uid (socket) or one address (TCP) may hold at once
TCP_CONNECTIONS = 512  # TCP connections at once, all callers; the server takes 2,048
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


def _refusal(status: int, reason: str, kind: str, detail: str) -> bytes:
    """A whole ``application/problem+json`` answer that closes the connection."""
    body = json.dumps(
        {
            "type": f"urn:agentsudo:problem:{kind}",
            "title": kind.replace("-", " ").capitalize(),
            "status": status,
            "detail": detail,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _peer_key(peer: Peer | None, client: tuple[str, int] | None) -> str | None:
    """Whom a connection counts against: its uid, its IPv4 address, its IPv6 /64; or nobody."""
    if peer is not None:
        return f"uid:{peer.uid}"
    if client is None:
        return None
    try:
        address = ipaddress.ip_address(client[0].partition("%")[0])
    except ValueError:
        return f"host:{client[0]}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"net:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"


class PeerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the peer credentials of a Unix-socket connection.

    Used as is, it only adds the peer; ``peer_protocol`` makes a guarded subclass.
    """

    header_timeout: ClassVar[float | None] = None
    per_peer: ClassVar[int | None] = None
    tcp_total: ClassVar[int | None] = None
    open_by_peer: ClassVar[Counter[str]] = Counter()
    open_tcp: ClassVar[list[int]] = [0]

    _counted_tcp = False

    _peer_key: str | None = None
    _header_timer: asyncio.TimerHandle | None = None
    _armed_cycle: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = _read_peer(transport)
        if peer is not None:
            self.app = _WithPeer(self.app, peer)
        elif self.tcp_total is not None:  # TCP, all callers together, leave the socket room
            if self.open_tcp[0] >= self.tcp_total:
                transport.write(
                    _refusal(
                        503,
                        "Service Unavailable",
                        "too-many-connections",
                        f"the broker holds {self.tcp_total} TCP connections already",
                    )
                )
                transport.close()
                return
            self.open_tcp[0] += 1
            self._counted_tcp = True
        key = _peer_key(peer, self.client)
        if key is not None and self.per_peer is not None:
            if self.open_by_peer[key] >= self.per_peer:
                transport.write(
                    _refusal(
                        429,
                        "Too Many Requests",
                        "too-many-connections",
                        f"at most {self.per_peer} connections at once from one caller",
                    )
                )
                transport.close()
                return
            self.open_by_peer[key] += 1
            self._peer_key = key
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._counted_tcp:
            self.open_tcp[0] -= 1
            self._counted_tcp = False
        if self._peer_key is not None:
            self.open_by_peer[self._peer_key] -= 1
            if self.open_by_peer[self._peer_key] <= 0:
                del self.open_by_peer[self._peer_key]
            self._peer_key = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.transport.is_closing() and self.cycle is not None:
            # uvicorn answered a malformed request itself (400) and closed: to the app still
            # running, as when a client leaves, the client is gone. Else its own answer made
            # h11 raise, a traceback in the log for each such request from anyone.
            if not self.cycle.response_complete and not self.cycle.disconnected:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
        if self.cycle is not self._armed_cycle:
            self._cancel_header_timer()  # a request head arrived: the deadline is met

    def on_response_complete(self) -> None:
        self._arm_header_timer()  # before: a pipelined request handled inside cancels it
        super().on_response_complete()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if self.header_timeout is None or self.transport.is_closing():
            return
        self._armed_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_too_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_too_late(self) -> None:
        """No complete request head in time: a 408 if it had begun one, and closed either way."""
        self._header_timer = None
        if self.cycle is not self._armed_cycle or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # no request in this cycle, but bytes of one
            self.transport.write(
                _refusal(
                    408, "Request Timeout", "request-timeout", "the request head came too slowly"
                )
            )
        self.transport.close()


def peer_protocol(
    *,
    header_timeout: float | None = HEADER_TIMEOUT,
    per_peer: int | None = PEER_CONNECTIONS,
    tcp_total: int | None = TCP_CONNECTIONS,
) -> type[PeerH11Protocol]:
    """A ``PeerH11Protocol`` for one server: its request-head deadline, per-peer cap, and
    cap on TCP connections from all callers together (the socket's callers keep room).

    ``None`` turns a guard off. Each class made here counts its own connections.
    """
    timeout, cap, tcp = header_timeout, per_peer, tcp_total

    class GuardedPeerH11Protocol(PeerH11Protocol):
        header_timeout = timeout
        per_peer = cap
        tcp_total = tcp
        open_by_peer = Counter()
        open_tcp = [0]

    return GuardedPeerH11Protocol


def peer_of(scope: Any) -> Peer | None:
    """The Unix-socket peer of a request, or ``None`` (TCP, or a server without this protocol)."""
    found = (scope.get("extensions") or {}).get(PEER_KEY)
    return found if isinstance(found, Peer) else None

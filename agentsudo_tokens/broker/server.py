"""Run the broker: uvicorn on a Unix socket (and on TCP when asked).

    serve(BrokerConfig(...), socket_path=Path("/run/agentsudo/broker.sock"))

The socket is made here, not by uvicorn, so its mode is set before anyone can
connect: 0666 (connecting proves nothing; the peer's uid, matched against the
policy, decides), or 0660 with a group. A stale socket file is replaced; any
other file at that path is refused. SIGTERM and SIGINT end the server
gracefully (uvicorn finishes the requests in flight); SIGHUP reloads the
policy (see ``broker.app``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .app import BrokerConfig, create_app

__all__ = ["bind_tcp", "bind_unix", "serve"]


def _check_socket_directory(directory: Path) -> None:
    """Refuse a directory where another user could swap the socket for one of its own.

    Whoever can rename or create entries there could put their own socket at the
    path, and every client would ask them instead (a sticky /tmp still lets them
    take the name first). The directory must belong to root or to this user and
    not be writable by group or others.
    """
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise ConfigError(f"--socket: cannot use {directory}: {exc.strerror or exc}") from exc
    if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
        raise ConfigError(
            f"--socket: {directory} could be changed by another user (owner uid "
            f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}); put the socket in a "
            "directory only root or the broker's user may write, e.g. /run/agentsudo"
        )


def bind_unix(path: Path, *, group: int | None = None) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0666 (0660 and ``group`` when given).

    :raises ConfigError: something other than a socket is at ``path``, or it cannot be made,
        or its directory is one another user could change.
    """
    _check_socket_directory(path.absolute().parent)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise ConfigError(
                f"--socket: {path} exists and is not a socket; refusing to replace it"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: a broker that did not clean up
        else:
            raise ConfigError(f"--socket: another broker is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o177)  # created 0600, then opened up on purpose below
        try:
            sock.bind(str(path))
        finally:
            os.umask(previous)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, 0o660 if group is not None else 0o666)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--socket: cannot listen on {path}: {exc.strerror or exc}") from exc
    return sock


def bind_tcp(listen: str) -> socket.socket:
    """A listening TCP socket for ``HOST:PORT`` (port 0: any free port).

    :raises ConfigError: not ``HOST:PORT``, or it cannot be bound.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"--listen: expected HOST:PORT, found {listen!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Connections inherit it: uvicorn writes a response's head and body apart, and with
        # Nagle on, the body waited for the client's delayed ACK (about 40 ms a request on a
        # kept-alive connection, measured).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--listen: cannot listen on {listen}: {exc.strerror or exc}") from exc
    return sock


def serve(
    config: BrokerConfig,
    *,
    socket_path: Path | None = None,
    listen: str | None = None,
    socket_group: int | None = None,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT.

    :param on_ready: called with the addresses served (``unix:///...``,
        ``http://host:port``) once they listen, before serving starts.
    :raises ConfigError: nothing to listen on, a bad address, or a bad broker configuration.
    """
    import uvicorn

    from .peer import peer_protocol

    if socket_path is None and listen is None:
        raise ConfigError("give --socket PATH, --listen HOST:PORT, or both")
    app = create_app(config)  # a bad policy or key directory stops us before any socket
    sockets: list[socket.socket] = []
    addresses: list[str] = []
    try:
        if socket_path is not None:
            sockets.append(bind_unix(socket_path, group=socket_group))
            addresses.append(f"unix://{socket_path.absolute()}")
        if listen is not None:
            tcp = bind_tcp(listen)
            sockets.append(tcp)
            host, port = tcp.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            addresses.append(f"http://{shown}:{port}")
            console = app.state.broker.console
            console.base_url = console.public_url or addresses[-1]  # its login links
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                http=peer_protocol(
                    header_timeout=config.header_timeout,
                    per_peer=config.peer_connections,
                    tcp_total=config.tcp_connections,
                ),
                lifespan="on",
                log_level="warning",
                timeout_keep_alive=5,
                timeout_graceful_shutdown=10,
                limit_concurrency=2048,  # TCP stops at 512 (peer.py): the socket keeps room
                proxy_headers=False,  # X-Forwarded-For from loopback named any address it liked
                backlog=128,
                server_header=False,
            )
        )

        def stop(signum: int, frame: object) -> None:
            server.should_exit = True  # uvicorn starts, then shuts down gracefully at once

        # Ours from before "listening" is said until the end: a SIGTERM that comes before
        # uvicorn's handlers (or after, as uvicorn re-raises it once it has shut down) stops
        # the broker gracefully, and it exits 0; none is lost, none kills it mid-write.
        quiet = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        # until the app's own handler (a reload) is in place, a SIGHUP is a reload of what was
        # just loaded: nothing to do, and not the end of the broker
        quiet[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            if on_ready is not None:
                on_ready(addresses)
            server.run(sockets=sockets)
        finally:
            for sig, handler in quiet.items():
                signal.signal(sig, handler)
    finally:
        for sock in sockets:
            sock.close()
        if socket_path is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
                    socket_path.unlink()

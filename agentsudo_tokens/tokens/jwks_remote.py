"""Public keys by URL: a JWKS endpoint fetched, cached and refetched with limits.

    source = JwksUrl("https://issuer.example/.well-known/jwks.json")
    verifier = Verifier(source)                  # or AGENTSUDO_JWKS=https://...
    key = await source.aget(kid)                 # async code: a due fetch runs in a thread

The key set is fetched once at construction (a ConfigError if that fails, like a
missing ``JwksFile``), then kept for ``max_age`` seconds; the first ``get``
after that refetches, so a retired key stops verifying within ``max_age``. An
unknown ``kid`` refetches at most once per ``min_refetch_interval`` for the
whole source, however many ``kid`` values callers make up. Concurrent callers
share one fetch. A failed fetch keeps the last good key set and logs a warning
on the ``agentsudo.jwks`` logger, for ``max_stale`` more seconds at most: once
the last good set is older than ``max_age + max_stale``, ``get`` raises
``KeysUnavailableError`` (retrying at most once per ``min_refetch_interval``)
until a fetch succeeds, so a retired key is not trusted forever while the
endpoint is down. Between fetches ``get`` costs a clock read, two comparisons
and a dict look-up.

Only ``https://`` is accepted, plain ``http://`` for loopback hosts
(``localhost``, ``127.0.0.0/8``, ``::1``), and a broker's Unix socket
(``unix:///run/agentsudo/broker.sock``: ``GET /.well-known/jwks.json`` on
it). Redirects are not followed; a
response must be ``200``, JSON, at most 1 MiB, and arrive whole within
``timeout``: the deadline covers the whole request (name look-up, connection,
TLS, headers, body), so a server trickling bytes cannot hold a fetch longer.
Keys are parsed by ``KeySet.from_dict``: keys not meant for verifying
signatures (``use`` other than ``sig``, ``key_ops`` without ``verify``) are
ignored.

``serve_jwks`` is the other end, for local setups: a small HTTP server that
publishes a key directory's current ``jwks.json`` (``agentsudo keys serve``).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from ..errors import ConfigError, KeysUnavailableError
from .keys import PublicKey
from .keyset import MAX_JWKS_BYTES, KeySet

__all__ = ["JwksUrl", "is_loopback_host", "serve_jwks"]

DEFAULT_MAX_AGE = 300.0
DEFAULT_MIN_REFETCH_INTERVAL = 10.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_STALE = 3600.0
WELL_KNOWN_PATHS = ("/.well-known/jwks.json", "/jwks.json")
UNIX_JWKS_PATH = WELL_KNOWN_PATHS[0]  # what is fetched on a broker's socket

_log = logging.getLogger("agentsudo.jwks")
_T = TypeVar("_T")
_ACCEPT = "application/jwk-set+json, application/json"
_SCHEME_RULE = "https://, or http:// for localhost, 127.0.0.1 or ::1"


class _FetchFailed(Exception):
    """One fetch did not produce a key set; the message says why (no key material)."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, what: str = "JWKS URL") -> SplitResult:
    """The URL, split, if it is one we fetch from.

    :raises ConfigError: another scheme, plain http to a non-loopback host, no host,
        credentials in the URL, or characters that do not belong in a URL.
    """
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise ConfigError(f"{what}: expected a plain ASCII URL", expected=_SCHEME_RULE)
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"{what}: bad host or port in {url!r}", found=url) from exc
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{what}: credentials in the URL are not supported")
    scheme = parts.scheme.lower()
    if (
        not host
        or scheme not in ("http", "https")
        or (scheme == "http" and not is_loopback_host(host))
    ):
        raise ConfigError(
            f"{what}: expected {_SCHEME_RULE}, found {url!r}", expected=_SCHEME_RULE, found=url
        )
    return parts


def _check_socket(url: str, what: str = "JWKS URL") -> str:
    """The path of ``unix:///absolute/path`` (a broker's socket).

    :raises ConfigError: not an absolute, printable path.
    """
    path = url[len("unix://") :]
    if not path.startswith("/") or path.rstrip("/") == "" or not path.isprintable():
        raise ConfigError(
            f"{what}: expected unix:///absolute/path/to/broker.sock, found {url!r}",
            expected="unix:///path",
            found=url,
        )
    return path


class _Deadline:
    """The sockets of one fetch, shut down when its time is up, whatever they wait on.

    Each socket is watched through a duplicate descriptor, which stays valid when
    TLS takes the original over; shutting it down ends every read in progress.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False

    def connect(
        self, address: tuple[str, int], timeout: Any = None, *args: Any, **kwargs: Any
    ) -> socket.socket:
        """``socket.create_connection``, the new socket watched."""
        return self.watch(socket.create_connection(address, timeout, *args, **kwargs))

    def watch(self, sock: socket.socket) -> socket.socket:
        """Watch ``sock``: shut it down when time is up (at once if it already is)."""
        copy = sock.dup()
        with self._lock:
            if not self._expired:
                self._sockets.append(copy)
                return sock
        _shut(copy)
        copy.close()
        return sock

    def expire(self) -> None:
        """Time is up: end every read and write of this fetch, now and later."""
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut(sock)

    def release(self) -> None:
        """The fetch is over: close the duplicates."""
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected (any more)
        pass


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: _Deadline | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if deadline is not None:
            self._create_connection = deadline.connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: _Deadline | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if deadline is not None:
            self._create_connection = deadline.connect


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (``unix:///run/agentsudo/broker.sock``), watched by a deadline."""

    def __init__(self, path: str, *, timeout: float, deadline: _Deadline) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path
        self._deadline = deadline

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            self._deadline.watch(sock)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, deadline=self._deadline)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._deadline = deadline
        self._ssl = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._ssl, deadline=self._deadline)


def _opener(
    loopback: bool, ssl_context: ssl.SSLContext | None, deadline: _Deadline
) -> urllib.request.OpenerDirector:
    """http and https only, no redirect handler (a 3xx is an error), no proxy for loopback.

    Every connection it makes is watched by ``deadline``.
    """
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({} if loopback else None),
        _HTTPHandler(deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ]
    if ssl_context is not None:
        handlers.append(_HTTPSHandler(deadline, ssl_context))
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _in_thread(func: Callable[..., _T], *args: Any) -> _T:
    """Run a blocking call in a worker thread (anyio when present: asyncio and trio)."""
    try:
        import anyio.to_thread
    except ImportError:  # pragma: no cover - anyio comes with httpx, starlette, mcp
        import asyncio

        return await asyncio.to_thread(func, *args)
    return await anyio.to_thread.run_sync(func, *args)


class JwksUrl:
    """A JWKS endpoint as a key source: cached, refetched with limits, never blocking for long.

    :param url: ``https://...``; ``http://`` only for a loopback host; or a broker's
        socket, ``unix:///path`` (``GET /.well-known/jwks.json`` on it).
    :param max_age: seconds a fetched key set is used before the next ``get`` refetches.
    :param min_refetch_interval: least seconds between fetches caused by unknown ``kid``
        values (and between retries after a failure).
    :param max_stale: seconds past ``max_age`` the last good key set stays in use while
        refetches fail; after that every ``get`` raises ``KeysUnavailableError`` until
        a fetch succeeds. 0: refuse as soon as a due refetch fails.
    :param timeout: seconds for the whole request: look-up, connection, headers and body.
    :param ssl_context: for ``https``; default: the system's trusted CAs.
    :param clock: a monotonic clock in seconds; for tests.
    :raises ConfigError: a URL we do not fetch from, bad limits, or the first fetch failed.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        min_refetch_interval: float = DEFAULT_MIN_REFETCH_INTERVAL,
        max_stale: float = DEFAULT_MAX_STALE,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._socket: str | None = None  # a broker's Unix socket, for unix:///path
        if url.startswith("unix://"):
            self._socket = _check_socket(url)
            parts = urlsplit("http://localhost")
        else:
            parts = _check_url(url)
        for name, value in (("max_age", max_age), ("timeout", timeout)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"JwksUrl {name}: expected seconds > 0, found {value!r}")
        for name, value in (
            ("min_refetch_interval", min_refetch_interval),
            ("max_stale", max_stale),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"JwksUrl {name}: expected seconds >= 0, found {value!r}")
        self.url = url
        self.max_age = max_age
        self.min_refetch_interval = min_refetch_interval
        self.max_stale = max_stale
        self.timeout = timeout
        self._clock = clock
        self._loopback = is_loopback_host(parts.hostname or "")
        self._ssl_context = None
        if parts.scheme.lower() == "https":
            self._ssl_context = ssl_context or ssl.create_default_context()
        self._lock = threading.Lock()
        self._generation = 0  # completed fetch attempts: lets waiting callers share one
        self._last_error = ""
        try:
            self._keys = self._download()
        except _FetchFailed as exc:
            raise ConfigError(
                f"cannot fetch the public keys from {url}: {exc}", expected="a JWKS", found=url
            ) from exc
        now = clock()
        self._fetched = self._last_attempt = now
        self._next_check = now + max_age
        self._stale_at = now + max_age + max_stale  # past this, no key without a good fetch

    def __repr__(self) -> str:
        return f"JwksUrl({self.url!r})"

    # -- the key source ------------------------------------------------------------

    def get(self, kid: str) -> PublicKey | None:
        """The trusted key with this ``kid``, or ``None``.

        May fetch (blocking, at most ``timeout``): when the key set is older than
        ``max_age``, or ``kid`` is unknown and no fetch happened for
        ``min_refetch_interval``. Otherwise a clock read and a dict look-up.

        :raises KeysUnavailableError: the last good key set is older than
            ``max_age + max_stale`` and no fetch since has succeeded.
        """
        key: PublicKey | None = self._keys.get(kid)
        now = self._clock()
        if now >= self._next_check or (
            key is None and now - self._last_attempt >= self.min_refetch_interval
        ):
            self._update(kid)
            key = self._keys.get(kid)
            now = self._clock()
        if now >= self._stale_at:
            self._refuse(now)
        return key

    async def aget(self, kid: str) -> PublicKey | None:
        """``get`` for async code: a fetch, when one is due, runs in a worker thread.

        Afterwards a plain ``get`` of the same ``kid`` (say, inside
        ``Verifier.verify`` on the event loop) is a cache hit until ``max_age``.

        :raises KeysUnavailableError: as for ``get``.
        """
        if self.needs_fetch(kid):
            return await _in_thread(self.get, kid)
        key: PublicKey | None = self._keys.get(kid)
        now = self._clock()
        if now >= self._stale_at:
            self._refuse(now)
        return key

    def needs_fetch(self, kid: str) -> bool:
        """True when ``get(kid)`` would fetch now (so it may block); never fetches itself."""
        return self._due(kid)

    @property
    def keys(self) -> KeySet:
        """The key set in use (refetched first when older than ``max_age``).

        :raises KeysUnavailableError: as for ``get``.
        """
        if self._clock() >= self._next_check:
            self._update(None)
        now = self._clock()
        if now >= self._stale_at:
            self._refuse(now)
        return self._keys

    def refresh(self) -> None:
        """Fetch now, whatever the cache says. On failure the last good key set stays.

        :raises ConfigError: the fetch failed.
        """
        with self._lock:
            reason = self._attempt()
        if reason is not None:
            raise ConfigError(
                f"cannot fetch the public keys from {self.url}: {reason}", found=self.url
            )

    async def refresh_async(self) -> None:
        """``refresh`` in a worker thread, so the event loop never waits on the network.

        :raises ConfigError: the fetch failed.
        """
        await _in_thread(self.refresh)

    # -- fetching ------------------------------------------------------------------

    def _refuse(self, now: float) -> None:
        """No key without a good fetch: the last good set is past ``max_age + max_stale``."""
        age, limit = now - self._fetched, self.max_age + self.max_stale
        raise KeysUnavailableError(
            f"public keys from {self.url} unavailable: the last good key set is {age:.0f}s old "
            f"(max_age {self.max_age:g}s + max_stale {self.max_stale:g}s) and refetching "
            f"failed: {self._last_error or 'no answer yet'}",
            expected=f"a key set at most {limit:g}s old",
            found=f"{age:.0f}s",
        )

    def _due(self, kid: str | None) -> bool:
        now = self._clock()
        if now >= self._next_check:
            return True
        return (
            kid is not None
            and kid not in self._keys
            and now - self._last_attempt >= self.min_refetch_interval
        )

    def _update(self, kid: str | None) -> None:
        """Fetch if still due, sharing a fetch already in flight.

        A caller whose key is in hand never queues behind a fetch: it uses the
        keys it has. A caller missing its key, or holding only keys past
        ``max_stale``, waits (at most ``timeout``) for the fetch in flight and
        then looks again, without fetching a second time.
        """
        generation = self._generation
        if (kid is not None and kid not in self._keys) or self._clock() >= self._stale_at:
            acquired = self._lock.acquire(timeout=self.timeout)
        else:
            acquired = self._lock.acquire(blocking=False)
        if not acquired:
            return
        try:
            if self._generation == generation and self._due(kid):
                self._attempt()
        finally:
            self._lock.release()

    def _attempt(self) -> str | None:
        """Fetch once (the lock held); return why it failed, or None."""
        try:
            keys = self._download()
        except Exception as exc:  # whatever went wrong, the last good key set stays
            reason = str(exc) if isinstance(exc, _FetchFailed) else f"unexpected {exc!r}"
            now = self._clock()
            self._last_error = reason
            self._last_attempt = now
            self._next_check = max(self._next_check, now + self.min_refetch_interval)
            self._generation += 1
            if now >= self._stale_at:
                _log.warning(
                    "JWKS refresh from %s failed (%s); the last good key set (fetched %.0fs "
                    "ago) is past max_age + max_stale: refusing every token until a fetch "
                    "succeeds",
                    self.url,
                    reason,
                    now - self._fetched,
                )
            else:
                _log.warning(
                    "JWKS refresh from %s failed (%s); keeping the last good key set "
                    "(%d keys, fetched %.0fs ago)",
                    self.url,
                    reason,
                    len(self._keys),
                    now - self._fetched,
                )
            return reason
        now = self._clock()
        if set(keys) != set(self._keys):
            _log.info("JWKS from %s: key ids now %s", self.url, ", ".join(keys))
        self._keys = keys  # the keys first: a reader never pairs old keys with a new lifetime
        self._fetched = self._last_attempt = now
        self._next_check = now + self.max_age
        self._stale_at = now + self.max_age + self.max_stale
        self._last_error = ""
        self._generation += 1
        return None

    def _download(self) -> KeySet:
        """GET the URL once, within ``timeout`` all told, and parse it strictly.

        :raises _FetchFailed: with a one-line reason.
        """
        body = _Get(
            self.url,
            timeout=self.timeout,
            accept=_ACCEPT,
            kind="JSON",
            accepts=_is_json,
            max_bytes=MAX_JWKS_BYTES,
            loopback=self._loopback,
            ssl_context=self._ssl_context,
            unix=self._socket,
            path=UNIX_JWKS_PATH,
        ).download()
        try:
            return KeySet.from_json(body)
        except ConfigError as exc:
            raise _FetchFailed(str(exc)) from exc


# -- one GET, shared by the JWKS and the revocation list ---------------------------


@dataclass(frozen=True)
class _Get:
    """One bounded GET: of ``url`` (http, https), or of ``path`` on the Unix socket ``unix``.

    ``download`` runs the request in a worker thread; when ``timeout`` passes
    first, its sockets are shut down (ending any read in progress) and the
    fetch fails. Redirects are not followed; the answer must be ``200``, of a
    media type ``accepts`` takes, at most ``max_bytes``.
    """

    url: str  # for http(s): what is fetched; for a socket: named in messages only
    timeout: float
    accept: str
    kind: str  # what the media type should be, in words
    accepts: Callable[[str], bool]
    max_bytes: int
    loopback: bool = False
    ssl_context: ssl.SSLContext | None = None
    unix: str | None = None  # a Unix socket's path
    path: str = "/"  # the request's path on the Unix socket

    def download(self) -> bytes:
        """The body, within ``timeout`` all told.

        :raises _FetchFailed: with a one-line reason.
        """
        deadline = _Deadline()
        outcome: list[bytes | BaseException] = []
        done = threading.Event()

        def fetch() -> None:
            try:
                outcome.append(self._fetch(deadline))
            except BaseException as exc:  # handed to the waiting caller
                outcome.append(exc)
            finally:
                deadline.release()
                done.set()

        worker = threading.Thread(target=fetch, name="agentsudo-fetch", daemon=True)
        worker.start()
        if not done.wait(self.timeout):
            deadline.expire()
            raise _FetchFailed(f"no complete response within {self.timeout:g}s")
        [result] = outcome
        if isinstance(result, BaseException):
            raise result
        return result

    def _fetch(self, deadline: _Deadline) -> bytes:
        """The body of one GET (in the worker thread).

        :raises _FetchFailed: with a one-line reason.
        """
        try:
            if self.unix is not None:
                return self._fetch_unix(deadline)
            request = urllib.request.Request(self.url, headers={"Accept": self.accept})
            opener = _opener(self.loopback, self.ssl_context, deadline)
            with opener.open(request, timeout=self.timeout) as response:
                return self._read(response)
        except urllib.error.HTTPError as exc:
            exc.close()
            moved = " (redirects are not followed)" if 300 <= exc.code < 400 else ""
            raise _FetchFailed(f"HTTP {exc.code}{moved}") from exc
        except urllib.error.URLError as exc:
            raise _FetchFailed(f"cannot connect: {exc.reason}") from exc
        except TimeoutError as exc:
            raise _FetchFailed(f"no response within {self.timeout:g}s") from exc
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise _FetchFailed(f"cannot connect: {exc.strerror or exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from exc

    def _fetch_unix(self, deadline: _Deadline) -> bytes:
        assert self.unix is not None
        connection = _UnixHTTPConnection(self.unix, timeout=self.timeout, deadline=deadline)
        try:
            connection.request("GET", self.path, headers={"Accept": self.accept})
            with connection.getresponse() as response:
                return self._read(response)
        finally:
            connection.close()

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        if response.status != 200:
            moved = " (redirects are not followed)" if 300 <= response.status < 400 else ""
            raise _FetchFailed(f"HTTP {response.status}, expected 200{moved}")
        media_type = response.headers.get_content_type()
        if not self.accepts(media_type):
            raise _FetchFailed(f"expected {self.kind}, found Content-Type {media_type}")
        limit = self.max_bytes
        length = response.headers.get("Content-Length", "")
        if length.strip().isdigit() and int(length) > limit:
            raise _FetchFailed(f"expected at most {limit} bytes, found {int(length)}")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _FetchFailed(f"expected at most {limit} bytes, found more")
            chunks.append(chunk)
        return b"".join(chunks)


# -- the other end: publishing a key directory's JWKS ------------------------------


class _JwksHandler(BaseHTTPRequestHandler):
    read_jwks: Callable[[], bytes]  # set per server by serve_jwks

    def version_string(self) -> str:
        return "agentsudo-jwks"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        if path not in WELL_KNOWN_PATHS:
            self._send(404, b'{"error": "not found"}\n', body=body)
            return
        try:
            data = self.read_jwks()
        except ConfigError as exc:
            self.log_error("cannot serve the JWKS: %s", exc)
            self._send(503, b'{"error": "public keys unavailable"}\n', body=body)
            return
        self._send(200, data, body=body, cache="max-age=60")

    def _send(self, status: int, data: bytes, *, body: bool, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve_jwks(read_jwks: Callable[[], KeySet], host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) answering ``GET /.well-known/jwks.json``.

    ``read_jwks`` is called per request, so a rotation or retirement shows up
    at once; what it returns is re-serialized from parsed public keys, so
    nothing but public key members is ever sent. Every other path is a 404.
    Call ``serve_forever()`` on the result, ``server_close()`` when done.

    :raises ConfigError: the address cannot be bound.
    """
    import json

    def body() -> bytes:
        return (json.dumps(read_jwks().to_dict(), indent=2) + "\n").encode("ascii")

    handler = type("JwksHandler", (_JwksHandler,), {"read_jwks": staticmethod(body)})
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

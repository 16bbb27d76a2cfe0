"""Talk to the broker: for launchers, the CLI, and programs that start agents.

    client = BrokerClient("unix:///run/agentsudo/broker.sock")
    token = client.issue("SupportBot", scopes=["read:orders"], ttl=600)["token"]
    client.revoke(agent="SupportBot")                     # admins only

JSON over HTTP, on a Unix socket (``unix:///path``: the broker knows the
caller by its uid) or TCP (``http(s)://host:port``, with ``credential=``, a
token the broker issued). Uses the standard library only, so a command that
asks the broker starts fast. A problem answer becomes the matching error of
``agentsudo_tokens.errors`` with the broker's one-line detail.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import (
    AgentSudoError,
    ConfigError,
    DelegationRefusedError,
    InvalidTokenError,
    PermissionDeniedError,
    StoreUnavailableError,
    UnknownApprovalError,
)

if TYPE_CHECKING:
    from ..config import Settings
    from ..state.approvals import ApprovalRequest
    from ..state.budgets import Balance
    from ..tokens.dpop import DPoPKey

__all__ = ["BrokerClient", "BrokerUnavailableError"]

MAX_ANSWER = 1024 * 1024
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # an approval request id's characters


class BrokerUnavailableError(ConfigError):
    """The broker cannot be reached, or answered something that is not the broker's API."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: the host name is only for the Host header."""

    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


_ERRORS: dict[int, type[AgentSudoError]] = {
    400: ConfigError,
    401: InvalidTokenError,
    403: PermissionDeniedError,
    404: UnknownApprovalError,
    503: StoreUnavailableError,
}


def _error_of(status: int, answer: dict[str, Any], message: str) -> AgentSudoError:
    """The error a refusal names (``agentsudo_error``, from a fixed list), else by its status."""
    from .. import errors

    name = answer.get("agentsudo_error")
    if name == "DelegationRefusedError":
        reason = answer.get("reason")
        return errors.DelegationRefusedError(message, reason=str(reason)[:40])
    if name in ("BudgetExhaustedError", "LimitExceededError") and status == 403:
        limited = getattr(errors, name)
        scope = answer.get("scope")
        return limited(  # type: ignore[no-any-return]
            message,
            argument=str(answer.get("argument", ""))[:64],
            limit=str(answer.get("limit", ""))[:300],
            scope=scope[:256] if isinstance(scope, str) else None,
        )
    cls = getattr(errors, name, None) if name in _NAMED_ERRORS else None
    if isinstance(cls, type) and issubclass(cls, AgentSudoError):
        return cls(message)
    return _ERRORS.get(status, AgentSudoError)(message)


_NAMED_ERRORS = frozenset(
    {
        "BadSignatureError", "ConfigError", "ExpiredTokenError", "InvalidLimitError",
        "InvalidScopeError",
        "InvalidTokenError", "MalformedTokenError", "NotYetValidTokenError",
        "RevokedTokenError", "TokenLifetimeError", "UnknownKeyError", "WrongAudienceError",
        "WrongIssuerError",
    }
)  # fmt: skip


def _lines(lines: Sequence[str], what: str) -> list[str]:
    """Limit or budget lines, checked here first (``InvalidLimitError``: outside the grammar)."""
    from ..errors import InvalidLimitError
    from ..tokens.limits_text import parse_budget, parse_limit

    if isinstance(lines, str):
        raise InvalidLimitError(f"{what}: expected a list of lines, found one string")
    for line in lines:
        parse_limit(line) if what == "limits" else parse_budget(line)
    return list(lines)


def check_address(address: str) -> str:
    """``address`` when it is ``unix:///path`` or ``http(s)://host:port``.

    :raises ConfigError: anything else (plain http only for a loopback host).
    """
    from ..tokens.jwks_remote import is_loopback_host

    text = address.strip()
    if text.startswith("unix://"):
        if not text[len("unix://") :].startswith("/"):
            raise ConfigError(
                f"AGENTSUDO_BROKER: expected unix:///absolute/path, found {address!r}"
            )
        return text
    parts = urlsplit(text)
    if parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname)
    ):
        if parts.hostname and not parts.path.strip("/") and not parts.query:
            return text.rstrip("/")
    raise ConfigError(
        "AGENTSUDO_BROKER: expected unix:///path, https://host:port, or http:// for a "
        f"loopback host, found {address!r}"
    )


class BrokerClient:
    """A client of one broker.

    :param address: ``unix:///path`` or ``http(s)://host:port``.
    :param credential: over TCP, a token the broker issued (audience ``agentsudo-broker``).
    :param timeout: seconds for connecting and for each read.
    :raises ConfigError: not a broker address.
    """

    def __init__(
        self, address: str, *, credential: str | None = None, timeout: float = 10.0
    ) -> None:
        self.address = check_address(address)
        self.credential = credential
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> BrokerClient:
        """The client of ``AGENTSUDO_BROKER``, with ``AGENTSUDO_BROKER_CREDENTIAL`` over TCP.

        :param settings: default ``Settings.from_env()``.
        :raises ConfigError: no broker is configured.
        """
        if settings is None:
            from ..config import Settings

            settings = Settings.from_env()
        if settings.broker is None:
            raise ConfigError("AGENTSUDO_BROKER is not set: no broker to ask")
        return cls(settings.broker, credential=settings.broker_credential)

    def __repr__(self) -> str:
        return f"BrokerClient({self.address!r})"

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.startswith("unix://"):
            return _UnixConnection(self.address[len("unix://") :], timeout=self.timeout)
        parts = urlsplit(self.address)
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            context = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def url_of(self, path: str) -> str:
        """The URL a request for ``path`` goes to, as the broker sees it (a DPoP proof's
        ``htu``): on a Unix socket ``http://localhost/...``."""
        base = "http://localhost" if self.address.startswith("unix://") else self.address
        return base + path

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        form: dict[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
        own_auth: bool = False,
    ) -> Any:
        """One call: the answer's JSON, or the error its problem names.

        :param form: sent as ``application/x-www-form-urlencoded`` instead of ``body``.
        :param headers: more request headers (a ``DPoP`` proof).
        :param own_auth: ``headers`` carry their own ``authorization`` (a token presented as
            its holder's): the broker credential is not sent.
        :raises BrokerUnavailableError: no broker there, or an answer that is not its API.
        :raises AgentSudoError: the broker refused (the subclass by the HTTP status).
        """
        headers = {**(headers or {}), "accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        elif form is not None:
            from urllib.parse import urlencode

            payload = urlencode(form, doseq=True).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        if self.credential is not None and not own_auth:
            headers["authorization"] = f"Bearer {self.credential}"
        connection = self._connection()
        try:
            connection.request(method, path, body=payload, headers=headers)
            answer = connection.getresponse()
            raw = answer.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise BrokerUnavailableError(
                f"the broker at {self.address} cannot be reached: {detail}"
            ) from exc
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if len(raw) <= MAX_ANSWER else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise BrokerUnavailableError(
                f"the broker at {self.address} answered {answer.status} without its JSON"
            )
        if answer.status >= 400:
            detail = str(parsed.get("detail") or f"HTTP {answer.status}")
            raise _error_of(answer.status, parsed, f"broker: {detail}")
        return parsed

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"}`` from a live broker."""
        return dict(self.request("GET", "/healthz"))

    def jwks(self) -> dict[str, Any]:
        """The broker's public keys, a JWK Set."""
        return dict(self.request("GET", "/.well-known/jwks.json"))

    def issue(
        self,
        agent: str,
        *,
        scopes: list[str] | None = None,
        ttl: int | None = None,
        audience: str | list[str] | None = None,
        once: bool = False,
        dpop_key: DPoPKey | None = None,
        limits: Sequence[str] | None = None,
        budgets: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A token for ``agent``, as the policy allows this caller.

        :param limits: narrower limits than the policy's, as ``--limit`` writes them
            (``'write:refunds amount<=50'``): added to the policy's.
        :param budgets: budgets as ``--budget`` writes them, at most the policy's.
        :param dpop_key: bind the token to this key (RFC 9449 §5): the request carries a
            DPoP proof signed by it, and services accept the token only with proofs of it.
        :returns: ``{"token", "jti", "agent", "scopes", "expires_at", "token_type"}``
            (``token_type`` ``DPoP`` for a bound token, else ``Bearer``).
        :raises PermissionDeniedError: the policy refuses (the broker's one-line reason).
        """
        body: dict[str, Any] = {"agent": agent}
        if scopes is not None:
            body["scopes"] = scopes
        if ttl is not None:
            body["ttl"] = ttl
        if audience is not None:
            body["audience"] = audience
        if once:
            body["once"] = True
        for name, lines in (("limits", limits), ("budgets", budgets)):
            if lines:
                body[name] = _lines(lines, name)
        headers = None
        if dpop_key is not None:
            headers = {"DPoP": dpop_key.proof("POST", self.url_of("/v1/tokens"))}
        answer = dict(self.request("POST", "/v1/tokens", body, headers=headers))
        if dpop_key is not None and answer.get("token_type") != "DPoP":
            raise BrokerUnavailableError(
                f"the broker at {self.address} did not bind the token to the key (RFC 9449)"
            )
        return answer

    def exchange(
        self,
        subject_token: str,
        *,
        actor: str | None = None,
        scopes: list[str] | None = None,
        audience: str | list[str] | None = None,
        ttl: int | None = None,
        limits: Sequence[str] | None = None,
        budgets: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Exchange ``subject_token`` for a narrower token for a sub-agent (RFC 8693).

        The token is the credential: no broker credential is needed.

        :param limits: narrower limits for the child, as ``--limit`` writes them; the
            child also carries every limit of the token that may apply to its scopes.
        :param budgets: the child's budgets, as ``--budget`` writes them: each is carved
            out of what the token's budget on that scope has left (needed for each
            budget of the token that may apply to the child's scopes).
        Both go as RFC 9396 ``authorization_details``.

        :param actor: the sub-agent's name; default the token's own agent.
        :param scopes: within the token's (default: all of them that may be passed on).
        :param audience: within the token's (default: the same).
        :param ttl: seconds, no longer than the token has left (default: the broker's TTL,
            cut to that).
        :returns: ``{"access_token", "issued_token_type", "token_type", "expires_in", "scope"}``
            and ``authorization_details`` when the child has limits.
        :raises DelegationRefusedError: beyond the token or the policy (``reason`` says which:
            ``limits`` for a looser limit, ``budget`` for a budget missing or above what is left).
        :raises InvalidLimitError: a line outside the grammar (nothing is sent).
        :raises InvalidTokenError: the token itself is refused (expired, revoked, ...).
        """
        from ..tokens.delegation import ACCESS_TOKEN_TYPE, GRANT_TYPE

        form: dict[str, str | list[str]] = {
            "grant_type": GRANT_TYPE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
        }
        # An empty list would go as "scope=" or no audience at all, which RFC 6749 reads as
        # "not asked": the parent's whole grant. Asked for nothing is refused here instead.
        if scopes is not None:
            if not "".join(scopes).strip():
                raise DelegationRefusedError(
                    "no scopes asked for: name at least one, or leave them out for the token's own",
                    reason="scope",
                    expected="at least one scope",
                    found=[],
                )
            form["scope"] = " ".join(scopes)
        if audience is not None:
            names = [audience] if isinstance(audience, str) else list(audience)
            if not "".join(names).strip():
                raise DelegationRefusedError(
                    "no audience asked for: name at least one, or leave it out for the token's own",
                    reason="audience",
                    expected="at least one audience",
                    found=[],
                )
            form["audience"] = names
        if actor is not None:
            form["actor"] = actor
        if ttl is not None:
            form["expires_in"] = str(ttl)
        if limits or budgets:
            from ..tokens.limits import LIMITS_CLAIM, Limits

            asked = Limits.parse(
                _lines(limits or (), "limits"), budgets=_lines(budgets or (), "budgets")
            )
            form[LIMITS_CLAIM] = json.dumps(asked.claim(), separators=(",", ":"))
        answer = dict(self.request("POST", "/v1/oauth/token", form=form))
        if not isinstance(answer.get("access_token"), str):
            raise BrokerUnavailableError(f"the broker at {self.address} answered without a token")
        return answer

    # -- budgets debited at the broker (agents under a broker) --------------------

    def spend(
        self,
        token: str,
        scope: str,
        arguments: Mapping[str, Any],
        *,
        dpop_key: DPoPKey | None = None,
    ) -> dict[str, Balance]:
        """Debit one call needing ``scope`` from ``token``'s budgets in the broker's store.

        The broker computes the cost from the token's own limits: ``arguments`` are the
        call's values of the budgeted arguments (JSON numbers; others may be left out).

        :param dpop_key: the key a bound token is bound to (a DPoP proof goes along).
        :returns: the balance after, per budget entry debited (its id); empty when no
            budget of the token applies to ``scope``.
        :raises BudgetExhaustedError: a budget is short, or a budgeted argument is missing
            or not a number >= 0 (the broker's one line; nothing more was debited).
        :raises InvalidTokenError: the token is refused (expired, revoked, ...).
        :raises StoreUnavailableError: the broker's store cannot be reached (refuse the call).
        """
        from ..state.budgets import Balance

        headers = {"authorization": f"Bearer {token}"}
        if dpop_key is not None:
            headers = {
                "authorization": f"DPoP {token}",
                "DPoP": dpop_key.proof("POST", self.url_of("/v1/budgets/spend"), token=token),
            }
        body = {"scope": scope, "arguments": dict(arguments)}
        answer = self.request("POST", "/v1/budgets/spend", body, headers=headers, own_auth=True)
        return {key: Balance(**value) for key, value in self._balances(answer).items()}

    def budgets(self, token_or_jti: str) -> dict[str, Balance]:
        """What a token has spent of its budgets at the broker, per entry id.

        A whole token asks as its holder (every budget it carries, spent or not);
        a bare ``jti`` asks as an admin of the broker (the entries spent so far).

        :raises PermissionDeniedError: a ``jti`` from a caller that is no admin.
        """
        from ..state.budgets import Balance

        return {
            key: Balance(**value)
            for key, value in self._balances(self.budget_report(token_or_jti)).items()
        }

    def budget_report(self, token_or_jti: str) -> dict[str, Any]:
        """The broker's answer for ``budgets``: ``{"jti", "balances": {id: {"limits",
        "spent", "left"}, and for a token's holder "scope", "budget"}}``."""
        from ..tokens.verifier import decode_unverified

        if not isinstance(token_or_jti, str) or not token_or_jti.strip():
            raise ConfigError("expected a token or a jti, found nothing")
        text = token_or_jti.strip()
        if text.count(".") == 2:  # a JWS: its holder asks
            jti = decode_unverified(text).claims.get("jti")
            if not isinstance(jti, str) or not _URL_SAFE.fullmatch(jti):
                raise InvalidTokenError("the token has no jti this broker could have issued")
            headers = {"authorization": f"Bearer {text}"}
            return dict(self.request("GET", f"/v1/budgets/{jti}", headers=headers, own_auth=True))
        if not _URL_SAFE.fullmatch(text):
            raise ConfigError(f"expected a token or a jti, found {text[:40]!r}")
        return dict(self.request("GET", f"/v1/budgets/{text}"))

    def _balances(self, answer: Any) -> dict[str, dict[str, dict[str, int]]]:
        """``balances`` of an answer, checked: entry id -> limits and spent, integers."""
        balances = answer.get("balances") if isinstance(answer, dict) else None
        if not isinstance(balances, dict):
            raise BrokerUnavailableError(f"the broker at {self.address} answered without balances")
        checked = {}
        for key, value in balances.items():
            try:
                limits, spent = dict(value["limits"]), dict(value["spent"])
                if not all(type(v) is int for v in (*limits.values(), *spent.values())):
                    raise TypeError
            except (KeyError, TypeError, ValueError):
                raise BrokerUnavailableError(
                    f"the broker at {self.address} answered a balance that is not one"
                ) from None
            checked[str(key)] = {"limits": limits, "spent": spent}
        return checked

    def revoke(
        self,
        *,
        jti: str | None = None,
        token: str | None = None,
        agent: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Revoke by ``jti``, whole ``token`` or ``agent`` (admins only).

        :returns: ``{"revoked", "target", "kept_until"}``.
        """
        body: dict[str, Any] = {
            key: value
            for key, value in (("jti", jti), ("token", token), ("agent", agent), ("reason", reason))
            if value is not None
        }
        return dict(self.request("POST", "/v1/revocations", body))

    # -- approvals (admins only) ---------------------------------------------------

    def _request_of(self, data: Any) -> ApprovalRequest:
        """An approval request as the broker sent it, checked as the store's are.

        :raises BrokerUnavailableError: not a consistent approval request.
        """
        from ..state.approvals import ApprovalRequest

        try:
            return ApprovalRequest.from_json(json.dumps(data))
        except (TypeError, ValueError):
            raise BrokerUnavailableError(
                f"the broker at {self.address} answered something that is not an approval request"
            ) from None

    def _approval_path(self, request_id: str, action: str = "") -> str:
        if not isinstance(request_id, str) or not _URL_SAFE.fullmatch(request_id):
            raise UnknownApprovalError(
                f"expected an approval request id like apr_..., found {request_id!r}",
                expected="apr_<id>",
                found=request_id,
            )
        return f"/v1/approvals/{request_id}{action}"  # the broker checks it further

    def approvals(self) -> list[ApprovalRequest]:
        """The requests waiting for an answer, oldest first, arguments whole."""
        answer = self.request("GET", "/v1/approvals").get("approvals")
        if not isinstance(answer, list):
            raise BrokerUnavailableError(
                f"the broker at {self.address} answered without a list of approvals"
            )
        return [self._request_of(item) for item in answer]

    def approval(self, request_id: str) -> ApprovalRequest:
        """One waiting request, whole.

        :raises UnknownApprovalError: no such request waiting.
        """
        return self._request_of(self.request("GET", self._approval_path(request_id)))

    def approve(self, request_id: str, *, by: str | None = None) -> ApprovalRequest:
        """Approve one waiting call: it proceeds, once. The broker records who asked it
        (its uid or credential); ``by`` is a name shown beside that.

        :raises UnknownApprovalError: no such request waiting (unknown, expired, answered).
        :raises PermissionDeniedError: the caller is not an admin.
        """
        body = {} if by is None else {"by": by}
        path = self._approval_path(request_id, "/approve")
        return self._request_of(self.request("POST", path, body))

    def deny(
        self, request_id: str, *, reason: str | None = None, by: str | None = None
    ) -> ApprovalRequest:
        """Refuse one waiting call, saying why; as ``approve`` otherwise."""
        body = {key: value for key, value in (("reason", reason), ("by", by)) if value is not None}
        path = self._approval_path(request_id, "/deny")
        return self._request_of(self.request("POST", path, body))

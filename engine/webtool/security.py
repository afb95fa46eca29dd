"""Request guards of the annotation tool, as one plain ASGI middleware.

- **Token** (when configured; required whenever the server binds a non-loopback address):
  every request must carry it as ``Authorization: Bearer <token>``, the ``sa_token`` cookie,
  or a ``token`` query parameter. A page opened with ``?token=…`` gets the cookie (HttpOnly,
  SameSite=Strict), so the page's own requests carry it without scripts seeing it.
- **Host** (when ``allowed_hosts`` is given): the ``Host`` header must name one of them, which
  stops DNS-rebinding pages from reaching a loopback server.
- **Cross-site writes**: a POST whose ``Origin`` is not this server is refused.
- **Body size**: bodies over ``max_body_bytes`` are refused with 413 before any handler runs.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

COOKIE = "sa_token"
MIN_TOKEN_LENGTH = 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.~-]{16,256}")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
    ),
)

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def check_token(token: str | None) -> str | None:
    """Return a usable token (or None); refuse short or odd ones with ``ValueError``."""
    if token is None:
        return None
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise ValueError(
            f"the access token must be {MIN_TOKEN_LENGTH}-256 characters of [A-Za-z0-9_.~-]"
        )
    return token


def _host_name(host: str) -> str:
    """``Host`` header without its port: ``127.0.0.1:8765`` → ``127.0.0.1``, ``[::1]:80`` →
    ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.split(":", 1)[0]


class GuardMiddleware:
    """See the module docstring. ``allowed_hosts`` None = any ``Host``."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        allowed_hosts: Iterable[str] | None = None,
        max_body_bytes: int = 4 << 20,
    ) -> None:
        self.app = app
        self.token = check_token(token)
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            await _reply(send, 400, "unknown Host header")
            return
        query_token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if self.token is not None and not self._authorised(headers, query_token):
            await _reply(send, 401, "a valid access token is required")
            return
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != host:
            await _reply(send, 403, "cross-site request refused")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
                return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        set_cookie = self.token is not None and query_token is not None

        async def send_guarded(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    extra.append((b"set-cookie", cookie.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, replay, send_guarded)

    def _authorised(self, headers: dict[str, str], query_token: list[str] | None) -> bool:
        offered = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        if "cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers["cookie"])
            except Exception:  # a malformed cookie header: no cookie token
                cookie = SimpleCookie()
            if COOKIE in cookie:
                offered.append(cookie[COOKIE].value)
        offered.extend(query_token or [])
        expected = self.token.encode()
        return any(hmac.compare_digest(t.encode(), expected) for t in offered)


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Access control: loopback needs nothing, any other address needs credentials.

Credentials come from settings (``TRACKING_DASHBOARD_TOKEN``, or
``TRACKING_DASHBOARD_USER`` + ``TRACKING_DASHBOARD_PASSWORD``). A request
passes with ``Authorization: Bearer <token>``, or HTTP basic auth with the
configured user and password, or any user name and the token as password
(so a browser's login prompt works with a token too). Comparisons are
constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tracking.errors import TrackingValueError


class ExposureError(TrackingValueError):
    """The dashboard would listen beyond this machine without credentials."""


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token) or bool(self.user and self.password)

    def accepts(self, header: str) -> bool:
        """Whether an ``Authorization`` header value carries these credentials."""
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        if self.token and hmac.compare_digest(password.encode(), self.token.encode()):
            return True
        if self.user and self.password:
            user_ok = hmac.compare_digest(user.encode(), self.user.encode())
            password_ok = hmac.compare_digest(password.encode(), self.password.encode())
            return user_ok and password_ok
        return False


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AuthMiddleware:
    """Refuse every request without the credentials (401 with a basic-auth challenge)."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
        if self.credentials.accepts(header):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "authentication required",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="tracking dashboard", charset="UTF-8"'},
        )
        await response(scope, receive, send)

"""Who may see and do what on the dashboard: tokens, browser sessions, CSRF, Origin.

- Two tokens: ``CRONWORK_DASHBOARD_TOKEN`` (admin: may act) and the optional
  ``CRONWORK_DASHBOARD_READONLY_TOKEN`` (may look). Without an admin token the process
  makes a random one and prints a login URL once (:meth:`Dashboard.announce`).
- API calls send ``Authorization: Bearer <token>`` and need nothing else: a browser
  never adds that header by itself, so a forged cross-site request cannot carry it.
- A browser logs in once and gets an HttpOnly, SameSite=Strict session cookie: a signed,
  expiring statement of its role (no server-side state, so every replica of ``cronwork
  web`` accepts it; rotating the admin token ends every session).
- Every form a session posts carries that session's CSRF token, and its Origin (or
  Referer) must name this host: a POST from another port of localhost arrives labelled
  ``Sec-Fetch-Site: same-origin`` with the SameSite cookie attached, so neither of those
  tells it apart.

Tokens never reach a log line or an error: comparisons are constant-time and refusals
say what was missing, never what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.settings import Settings

#: The session cookie's name.
COOKIE = "cronwork_session"
#: Seconds a browser session lasts.
SESSION_SECONDS = 12 * 3600
#: Form field and header that carry the CSRF token.
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
#: What a display name given at login may contain (it goes into the audit).
_NAME = re.compile(r"[^\w .@-]+")


#: Declares the bearer scheme in the OpenAPI document; the check itself is principal().
BEARER = HTTPBearer(
    auto_error=False,
    description="CRONWORK_DASHBOARD_TOKEN (admin) or CRONWORK_DASHBOARD_READONLY_TOKEN",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


class Role(StrEnum):
    ADMIN = "admin"
    READ = "read"


class LoginRequired(Exception):
    """A page was asked for without a session: the browser is sent to the login page."""


@dataclass(frozen=True)
class Tokens:
    admin: str
    readonly: str | None
    #: True when the admin token was made up at start (no CRONWORK_DASHBOARD_TOKEN).
    generated: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        admin = settings.dashboard_token
        readonly = settings.dashboard_readonly_token
        return cls(
            admin=admin.get_secret_value() if admin else secrets.token_urlsafe(24),
            readonly=readonly.get_secret_value() if readonly else None,
            generated=admin is None,
        )

    def role_of(self, token: str) -> Role | None:
        given = token.encode()
        if hmac.compare_digest(given, self.admin.encode()):
            return Role.ADMIN
        if self.readonly and hmac.compare_digest(given, self.readonly.encode()):
            return Role.READ
        return None

    @property
    def _key(self) -> bytes:
        # Derived from both tokens: changing either ends every session made with it.
        return hashlib.sha256(f"cronwork-session\0{self.admin}\0{self.readonly}".encode()).digest()

    def sign(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())


@dataclass(frozen=True)
class Principal:
    role: Role
    #: Credited in the audit: ``web:<name>`` for a session, ``api:<role>`` for a bearer.
    who: str
    #: The session's CSRF token; None for bearer-token calls (they need none).
    csrf: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == Role.ADMIN


def issue_session(tokens: Tokens, role: Role, name: str, now: float | None = None) -> str:
    clean = _NAME.sub("", name).strip()[:40] or str(role)
    payload = {"r": str(role), "n": clean, "e": int((now or time.time()) + SESSION_SECONDS)}
    payload["s"] = secrets.token_urlsafe(12)
    data = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{data}.{tokens.sign(data.encode())}"


def read_session(tokens: Tokens, value: str, now: float | None = None) -> Principal | None:
    data, _, sig = value.partition(".")
    if not data or not hmac.compare_digest(sig.encode(), tokens.sign(data.encode()).encode()):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        role = Role(payload["r"])
        expires, name, nonce = int(payload["e"]), str(payload["n"]), str(payload["s"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (now or time.time()):
        return None
    return Principal(role, f"web:{name}", csrf=tokens.sign(f"csrf\0{nonce}".encode()))


def principal(request: Request) -> Principal | None:
    """Who is asking: a bearer token, else a valid session cookie, else nobody."""
    tokens: Tokens = request.app.state.dashboard.tokens
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        role = tokens.role_of(token.strip())
        return None if role is None else Principal(role, f"api:{role}")
    cookie = request.cookies.get(COOKIE)
    return read_session(tokens, cookie) if cookie else None


def same_origin(request: Request) -> bool:
    """The Origin (or, without one, the Referer) names the host the request was sent to."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not source or not host or source == "null":
        return False
    # Host and port only: behind a TLS-terminating proxy the browser says https while
    # this process sees http.
    return urlsplit(source).netloc.lower() == host.lower()


def page_viewer(request: Request) -> Principal:
    """Dependency of HTML pages: anyone with a session, else off to the login page."""
    who = principal(request)
    if who is None:
        raise LoginRequired()
    return who


def api_viewer(request: Request, _: Credentials) -> Principal:
    """Dependency of JSON reads: a bearer token or a session."""
    who = principal(request)
    if who is None:
        raise HTTPException(401, "a token is required", headers={"WWW-Authenticate": "Bearer"})
    return who


async def actor(request: Request, _: Credentials) -> Principal:
    """Dependency of every action (form or API): an admin, and for a browser session a
    matching CSRF token from this origin. Bearer calls need no CSRF token."""
    who = principal(request)
    if who is None:
        raise HTTPException(401, "log in, or send an admin token", {"WWW-Authenticate": "Bearer"})
    if not who.admin:
        raise HTTPException(403, "this token may only look: actions need the admin token")
    await _check_form(request, who)
    return who


async def poster(request: Request) -> Principal:
    """Dependency of a form any session may post (logging out): CSRF token and Origin."""
    who = principal(request)
    if who is None:
        raise HTTPException(401, "not logged in")
    await _check_form(request, who)
    return who


async def _check_form(request: Request, who: Principal) -> None:
    if who.csrf is None:  # a bearer token: a browser cannot forge the header
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and "form" in request.headers.get("content-type", ""):
        sent = str((await request.form()).get(CSRF_FIELD) or "")
    if not sent or not hmac.compare_digest(sent.encode(), who.csrf.encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    if not same_origin(request):
        raise HTTPException(403, "refused: the request did not come from this dashboard's origin")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

"""Who may talk to the studio, and what every answer carries (``docs/studio_api.md``, "Who may call it").

The studio is a local server: any web page the user visits could otherwise drive it. ``Guard`` is the first
thing every HTTP request meets (pure ASGI, before any route), and refuses, as JSON ``{"error": ...}``:

- 400: a request with both ``Content-Length`` and ``Transfer-Encoding``, or not exactly one ``Host``;
- 403: a ``Host`` that is not a name of this server (DNS rebinding): ``localhost``, a loopback address or the
  ``--host`` it was started with, with the port it listens on; an ``Origin`` other than the page's own (``null``
  too); a browser's cross-site request (``Sec-Fetch-Site``) other than opening a page; a missing or wrong token
  when the server needs one (a non-loopback ``--host``);
- 415: a request body that is not ``Content-Type: application/json`` (a form or ``text/plain`` POST, which a
  foreign page can send without asking first);
- 503: beyond ``MAX_ACTIVE`` requests in progress (idle connections do not count: ``connections.py``).

Every answer, refusals included, gets the security headers (``HEADERS``): a same-origin CSP, nosniff, no
framing, no referrer, same-origin resource and opener policies. The token, when needed, is taken from the
``token`` query parameter (the URL ``serve`` prints), an ``Authorization: Bearer`` header, or the cookie that
opening that URL sets (``HttpOnly; SameSite=Strict``, so no other site's request carries it).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.responses import JSONResponse, RedirectResponse

CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-resource-policy", b"same-origin"), (b"cross-origin-opener-policy", b"same-origin")]
MAX_ACTIVE = 64  # requests in progress at once (streams included); beyond, 503 with Retry-After
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class Access:
    """What the server was started with: the address it binds (``--host``) and its token (``None``: none needed)."""

    host: str = "127.0.0.1"
    token: str | None = None

    def cookie(self, port: int | None) -> str:
        return f"tinydiffusion-token-{port or 80}"


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Guard:
    def __init__(self, app, access: Access = Access(), max_active: int = MAX_ACTIVE):
        self.app, self.access, self.max_active, self.active = app, access, max_active, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + HEADERS}
            await send(message)

        try:
            given = check(scope, self.access)
        except Refused as e:
            headers = {"Connection": "close"} if e.status == 400 else None
            return await JSONResponse({"error": str(e)}, e.status, headers)(scope, receive, secured)
        if given == "query" and scope["method"] == "GET" and scope["path"] == "/":  # the URL serve printed
            cookie = self.access.cookie(_port(scope))
            page = RedirectResponse("/", 303)
            page.set_cookie(cookie, self.access.token or "", httponly=True, samesite="strict")
            return await page(scope, receive, secured)
        if self.active >= self.max_active:
            return await JSONResponse({"error": f"the studio is busy ({self.active} requests in progress); try again"},
                                      503, {"Retry-After": "1"})(scope, receive, secured)
        self.active += 1
        try:
            await self.app(scope, receive, secured)
        finally:
            self.active -= 1


def check(scope, access: Access) -> str | None:
    """Raise ``Refused`` for a request the studio does not serve; where the token came from (or ``None``)."""
    headers: dict[bytes, list[bytes]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    if b"content-length" in headers and b"transfer-encoding" in headers:
        raise Refused(400, "a request with both Content-Length and Transfer-Encoding is refused (request smuggling)")
    hosts = headers.get(b"host", [])
    if len(hosts) != 1:
        raise Refused(400, f"expected exactly one Host header, got {len(hosts)}")
    host = hosts[0].decode("latin-1")
    name, port = split_host(host)
    server_port = _port(scope)
    if name is None or not host_allowed(name, access.host) or not _same_port(port, server_port):
        raise Refused(403, f"Host {host[:80]!r} is not an address of this studio: it answers to localhost, "
                           f"127.0.0.1 and [::1]{_and_host(access.host)} on port {server_port} (a page that reaches "
                           f"it under another name, e.g. by DNS rebinding, is refused)")
    origin = headers.get(b"origin", [None])[0]
    if origin is not None and not same_origin(origin.decode("latin-1"), name, port):
        raise Refused(403, f"Origin {origin.decode('latin-1')[:80]!r}: requests from other web pages are refused "
                           f"(only the studio's own page, http://{host[:80]}, may call it)")
    site = headers.get(b"sec-fetch-site", [b"same-origin"])[0]
    mode = headers.get(b"sec-fetch-mode", [b"navigate"])[0]
    if site in (b"cross-site", b"same-site") and not (scope["method"] == "GET" and mode == b"navigate"):
        raise Refused(403, "a request from another site is refused (Sec-Fetch-Site: " + site.decode() + ")")
    given = _token(scope, headers, access) if access.token is not None else None
    if access.token is not None and given is None:
        raise Refused(403, "this studio needs its token (it listens on a non-loopback address): open the URL "
                           "`tinydiffusion serve` printed (…/?token=…), or send Authorization: Bearer TOKEN")
    if scope["method"] not in ("GET", "HEAD") and _has_body(headers):
        kind = headers.get(b"content-type", [b""])[0].decode("latin-1").split(";")[0].strip().lower()
        if kind != "application/json":
            raise Refused(415, f"Content-Type {kind or 'none'!r} is refused: the studio takes JSON bodies only, "
                               f"as Content-Type: application/json")
    return given


def split_host(value: str) -> tuple[str | None, int | None]:
    """``(name, port)`` of a Host (or Origin's authority): lowercased, IPv6 without brackets; ``(None, None)``
    when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None, None
        port_text = rest[1:] if rest else None
    else:
        if value.count(":") > 1:
            return None, None
        name, _, port_text = value.partition(":")
        port_text = port_text if ":" in value else None
    if not name or (port_text is not None and not (port_text.isdigit() and len(port_text) <= 5)):
        return None, None
    return name, int(port_text) if port_text is not None else None


def host_allowed(name: str, bound: str) -> bool:
    """A loopback name or address, the ``--host`` the server binds, or with a wildcard bind any IP address."""
    bound = bound.strip().lower().strip("[]")
    if name == "localhost" or name == bound:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback) or bound in WILDCARDS or \
        address == _address(bound)


def same_origin(origin: str, name: str, port: int | None) -> bool:
    """Whether ``Origin`` is the page's own: ``http://`` and the request's Host (``null`` never is)."""
    parts = urlsplit(origin)
    if parts.scheme != "http" or parts.path or parts.query or parts.username or parts.password:
        return False
    other_name, other_port = split_host(parts.netloc)
    return other_name == name and (other_port or 80) == (port or 80)


def _token(scope, headers: dict[bytes, list[bytes]], access: Access) -> str | None:
    """Where a correct token came from ("query", "header", "cookie"), or ``None``."""
    expected = (access.token or "").encode()
    candidates = []
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    candidates += [("query", v.encode()) for v in query.get("token", [])]
    for value in headers.get(b"authorization", []):
        scheme, _, credential = value.partition(b" ")
        if scheme.lower() == b"bearer":
            candidates.append(("header", credential.strip()))
    for value in headers.get(b"cookie", []):
        jar = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            continue
        morsel = jar.get(access.cookie(_port(scope)))
        if morsel is not None:
            candidates.append(("cookie", morsel.value.encode()))
    for where, value in candidates:
        if secrets.compare_digest(value, expected):
            return where
    return None


def _has_body(headers: dict[bytes, list[bytes]]) -> bool:
    lengths = headers.get(b"content-length", [b"0"])
    return b"transfer-encoding" in headers or any(v.strip() not in (b"", b"0") for v in lengths)


def _port(scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None


def _same_port(port: int | None, server_port: int | None) -> bool:
    return server_port is None or (port or 80) == server_port


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _and_host(bound: str) -> str:
    bound = bound.strip()
    if bound in WILDCARDS:
        return " (and any IP address: it listens on every interface)"
    return "" if bound in ("127.0.0.1", "localhost", "::1", "[::1]") else f" (and {bound}, its --host)"

"""What the worker's HTTP pages share: bearer-token access, quiet client errors, /kpi's paging.

Access (KPI_API_TOKENS, KPI_API_OPEN_PAGES): with no token configured every page is open, as
before. With tokens, every page -- faust's own included -- answers 401 unless the request carries
`Authorization: Bearer <one of the tokens>`, except the open pages (default /metrics, /health,
/ready, /openapi.yaml: Prometheus and the kubelet's probes send none) and the dashboard's HTML,
CSS and JS, which hold no data (the page sends its token to /dashboard/data). Tokens are compared
by their SHA-256 digests with hmac.compare_digest, against every configured token each time.

Client errors -- a request line or header too long or malformed (aiohttp's parser), a bad query,
a missing token -- are answered 4xx and logged in one line at INFO; aiohttp would log the parser's
at ERROR with a traceback. Server errors keep their full traceback.

/kpi paging: values in the order of their kpi.updates keys (the Redis hash fields), `limit` per
page, `cursor` = the opaque position after the last key of the previous page (base64url of that
key). A key present for the whole walk is returned exactly once, whatever changes meanwhile; a key
added during the walk is returned if it sorts after the cursor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from stream.core.config import SecretStr

log = logging.getLogger(__name__)

# The dashboard's code: open whatever KPI_API_OPEN_PAGES says (no data in them)
ALWAYS_OPEN = frozenset({"/dashboard", "/dashboard/dashboard.css", "/dashboard/dashboard.js"})
KPI_FILTERS = ("kpi", "window", "scope", "scope_id", "horizon", "kind")
KPI_DEFAULT_LIMIT = 1000
KPI_MAX_LIMIT = 10_000
CURSOR_PREFIX = b"k1:"
MAX_CURSOR_CHARS = 4096
# base64url without padding of CURSOR_PREFIX + a key (openapi.yaml has the same pattern): any string
# of this form is a position, so a client cannot make one the page fails on
CURSOR_PATTERN = re.compile(r"azE6(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?")
READ_CHUNK = 1000


class ClientError(Exception):
    """A request the page cannot answer as asked: 400 with this message."""


# -- access ----------------------------------------------------------------------------------------


class TokenCheck:
    """Is a request's Authorization header one of the configured bearer tokens?"""

    def __init__(self, tokens: tuple[SecretStr, ...]) -> None:
        self._digests = tuple(hashlib.sha256(t.value.encode()).digest() for t in tokens)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        matched = False
        for digest in self._digests:  # every token, whichever matches: the time says nothing
            matched |= hmac.compare_digest(given, digest)
        return matched


def access_middleware(tokens: tuple[SecretStr, ...], open_pages: tuple[str, ...]):
    """An aiohttp middleware refusing, with 401, requests to protected pages without a token."""
    check = TokenCheck(tokens)
    open_paths = ALWAYS_OPEN | set(open_pages)

    @web.middleware
    async def require_token(request: web.Request, handler):
        if not check or request.path in open_paths or check.accepts(request.headers.get("Authorization")):
            return await handler(request)
        log.info("refused %s %s from %s: %s bearer token", request.method, request.path, request.remote,
                 "wrong" if request.headers.get("Authorization") else "no")
        return web.json_response(
            {"error": "this page needs `Authorization: Bearer <token>` (KPI_API_TOKENS)"}, status=401,
            headers={"WWW-Authenticate": 'Bearer realm="kpi-stream"', "Cache-Control": "no-store"})

    return require_token


# -- client errors in the log ----------------------------------------------------------------------


class QuietClientErrors(logging.Filter):
    """On aiohttp's server logger: a request the parser refused as the client's fault (4xx: a
    request line or header too long, a malformed request) becomes one INFO line without its
    traceback; anything else passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 500) < 500:
            record.msg = "client error %d from %s: %s"
            record.args = (error.code, record.args[0] if record.args else "?", _one_line(error.message))
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
            return log.isEnabledFor(logging.INFO)
        return True


def quiet_client_errors() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietClientErrors) for f in server_log.filters):
        server_log.addFilter(QuietClientErrors())


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


def client_error(request, error: Exception, status: int = 400):
    """A client error's answer, and its one line at INFO."""
    log.info("client error %d: %s %s: %s", status, request.method, request.path, _one_line(error))
    return web.json_response({"error": str(error)}, status=status, headers={"Cache-Control": "no-store"})


# -- /kpi paging -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KpiQuery:
    filters: dict[str, str]
    limit: int = KPI_DEFAULT_LIMIT
    after: str | None = None  # the last key of the previous page


def parse_kpi_query(query: Mapping) -> KpiQuery:
    """/kpi's query string: the filters, `limit` and `cursor`; each at most once, nothing else."""
    try:
        names = [name for name, _value in query.items()]  # every occurrence (keys() may merge them)
    except UnicodeDecodeError:
        raise ClientError("the query string is not UTF-8") from None
    allowed = (*KPI_FILTERS, "limit", "cursor")
    unknown = sorted({name for name in names if name not in allowed})
    if unknown:
        raise ClientError(f"unknown parameter(s) {', '.join(map(repr, unknown))}: one of {', '.join(allowed)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ClientError(f"parameter(s) given more than once: {', '.join(repeated)}")
    filters = {name: query[name] for name in KPI_FILTERS if name in query}
    limit = KPI_DEFAULT_LIMIT
    if "limit" in query:
        text = query["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= KPI_MAX_LIMIT:
            raise ClientError(f"limit must be a whole number from 1 to {KPI_MAX_LIMIT}: {text[:40]!r}")
        limit = int(text)
    after = decode_cursor(query["cursor"]) if "cursor" in query else None
    return KpiQuery(filters, limit, after)


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(CURSOR_PREFIX + key.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    bad = ClientError("cursor is not one this page gave out (pass `next_cursor` unchanged)")
    if len(cursor) > MAX_CURSOR_CHARS or not CURSOR_PATTERN.fullmatch(cursor):
        raise bad
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise bad from None
    # a key, or for a cursor not made here some bytes: a position among the keys all the same
    return raw[len(CURSOR_PREFIX):].decode("utf-8", "surrogateescape")


def _matches(message: dict, filters: dict[str, str]) -> bool:
    return all(str(message.get(name)) == wanted for name, wanted in filters.items())


class SortedKeys:
    """The hash's keys, sorted, listed again only when the hash's key count moved (HLEN is O(1))
    or `max_age` seconds passed: a walk through /kpi's pages costs one HKEYS per change of the key
    set, not one per page (a field force's hash holds hundreds of thousands of keys with calendar
    periods). Keys are never deleted (spec 13: no tombstones), so an unchanged count is an
    unchanged key set; `max_age` bounds the exception (Redis emptied and refilled to the same
    count)."""

    def __init__(self, keys: Callable[[], Awaitable[list[str]]], count: Callable[[], Awaitable[int]],
                 max_age: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._count = count
        self.max_age = max_age
        self._clock = clock
        self._sorted: list[str] = []
        self._listed: tuple[float, int] | None = None  # (when, key count then)
        self._lock = asyncio.Lock()

    async def __call__(self) -> list[str]:
        async with self._lock:  # one listing for the requests that arrive together
            count = await self._count()
            now = self._clock()
            listed = self._listed
            if listed is None or listed[1] != count or now - listed[0] >= self.max_age:
                self._sorted = sorted(await self._keys())
                self._listed = (now, count)
            return self._sorted


def _unescape(segment: str) -> str:
    return segment.replace("%7C", "|").replace("%25", "%")


def key_may_match(key: str, filters: dict[str, str]) -> bool:
    """False when the key's segments (spec 5.1: kpi|window|scope|scope_id[|horizon or kind])
    already show a value of another kpi, window, scope or scope_id; the body decides the rest."""
    parts = key.split("|")
    if len(parts) < 4:
        return True
    for position, name in enumerate(("kpi", "window", "scope", "scope_id")):
        wanted = filters.get(name)
        if wanted is None:
            continue
        segment = _unescape(parts[position])
        if name == "window" and segment == "-":
            segment = "None"  # the body's null window, as the filter compares it
        if segment != wanted:
            return False
    return True


async def kpi_page(keys: Callable[[], Awaitable[list[str]]],
                   read: Callable[[list[str]], Awaitable[list[bytes | None]]], query: KpiQuery) -> dict:
    """One page of /kpi: up to `limit` values matching the filters, after the cursor's key.
    `keys` gives the hash's keys sorted (`SortedKeys`)."""
    ordered = await keys()
    if query.filters:  # the key shows kpi, window, scope and scope id: skip the others unread
        ordered = [key for key in ordered if key_may_match(key, query.filters)]
    position = 0 if query.after is None else bisect_right(ordered, query.after)
    rows: list[dict] = []
    last_key: str | None = None
    while position < len(ordered) and len(rows) < query.limit:
        chunk = ordered[position:position + max(READ_CHUNK, query.limit - len(rows))]
        bodies = await read(chunk)
        for key, body in zip(chunk, bodies):
            position += 1
            if body is None:  # gone since the keys were listed
                continue
            message = orjson.loads(body)
            if _matches(message, query.filters):
                rows.append(message)
                last_key = key
                if len(rows) == query.limit:
                    break
    more = len(rows) == query.limit and position < len(ordered)
    return {"count": len(rows), "limit": query.limit, "values": rows,
            "next_cursor": encode_cursor(last_key) if more and last_key is not None else None}

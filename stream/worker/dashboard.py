"""The dashboard page on the worker's web server: headline KPIs per scope and window, short
trends, and the territories whose active accounts fell most.

    GET /dashboard                   the page (static HTML, CSS and JS shipped in stream/worker/static)
    GET /dashboard/data?window=30d   its data as JSON

Values come from Redis, the source `/kpi` reads, so the page and `/kpi` agree, and any worker's page
shows every scope (each worker publishes only its own scopes, Redis holds all). Trends are sampled
from Redis on a timer in every worker (`SAMPLE_SECONDS`) into a bounded ring kept in memory
(stream/stages/trends.py): they start empty when the worker starts.

Which regions and territories exist is read from Redis by a filtered scan of a few key patterns
(`ScopeDirectory`), at most every `DISCOVER_SECONDS`; the values are then read by key (HMGET).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Iterable

import orjson

from stream.core.catalogue import GLOBAL_SCOPE, kpi_key
from stream.core.config import format_duration
from stream.core.timeparse import format_rfc3339_us
from stream.stages.trends import TrendRing, picks, worst_movers
from stream.worker.api import client_error

if TYPE_CHECKING:
    from stream.worker.app import KpiWorker
    from stream.worker.sinks import RedisSink

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
TREND_SECONDS = 30 * 60
# A series costs TREND_SECONDS / SAMPLE_SECONDS doubles (2.9 KB): 2,048 series are ~6 MB at most,
# whatever the number of scopes (new series past it are refused; see TrendRing).
MAX_SERIES = 2048
DISCOVER_SECONDS = 15.0
TREND_POINTS = 120  # samples per sparkline sent to the page
WORST_MOVERS = 10
HMGET_CHUNK = 1000
SCOPE_TYPES = ("global", "region", "territory")
STATIC_FILES = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Headline:
    kpi: str
    label: str
    unit: str  # count, money, ratio
    windowed: bool = True
    kind: str | None = None
    # trends of this KPI kept for these scope types (territories: only what the movers need)
    trended: tuple[str, ...] = ("global", "region")

    @property
    def id(self) -> str:
        return self.kpi if self.kind is None else f"{self.kpi}:{self.kind}"

    def key(self, window: str, scope: str, scope_id: str) -> str:
        return kpi_key(self.kpi, window if self.windowed else None, scope, scope_id, self.kind)


HEADLINES = (
    Headline("active_accounts", "Active accounts", "count", trended=SCOPE_TYPES),
    Headline("dormant_accounts", "Dormant accounts", "count"),
    Headline("reactivated_accounts", "Reactivated accounts", "count"),
    Headline("orders", "Orders", "count"),
    Headline("sales_amount", "Order value", "money"),
    Headline("visit_to_order_ratio", "Strike rate", "ratio"),
    Headline("open_leads", "Open leads", "count", windowed=False),
    Headline("pipeline_velocity", "Pipeline velocity / day", "money"),
    Headline("activities", "Rep activities", "count", kind="all"),
)
MOVERS_HEADLINE = HEADLINES[0]
# Which scope ids exist, per scope type: those with a key of one of these KPIs
DISCOVERY = {"region": ("active_accounts", "open_leads"), "territory": ("active_accounts",)}


class ClientError(Exception):
    """A request the page cannot answer as asked: 400 with this message."""


class ScopeDirectory:
    """The region and territory ids present in Redis, rescanned at most every DISCOVER_SECONDS."""

    def __init__(self) -> None:
        self.ids: dict[str, list[str]] = {"global": [GLOBAL_SCOPE[1]], "region": [], "territory": []}
        self.scanned_at: float | None = None
        self._lock = asyncio.Lock()

    async def current(self, sink: "RedisSink", now: float) -> dict[str, list[str]]:
        async with self._lock:
            if self.scanned_at is None or now - self.scanned_at >= DISCOVER_SECONDS:
                self.ids = {"global": [GLOBAL_SCOPE[1]], **await self._scan(sink)}
                self.scanned_at = now
        return self.ids

    async def _scan(self, sink: "RedisSink") -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for scope, probes in DISCOVERY.items():
            ids: set[str] = set()
            for kpi in probes:
                pattern = f"{_glob_escape(kpi + '|')}*{_glob_escape('|' + scope + '|')}*"  # any window
                async for _field, body in sink.client.hscan_iter(sink.hash_name, match=pattern, count=1000):
                    message = orjson.loads(body)
                    if message.get("scope") == scope:
                        ids.add(str(message["scope_id"]))
            found[scope] = sorted(ids)
        return found


class Dashboard:
    """The trend ring, its sampling from Redis and the page's data."""

    def __init__(self, windows: tuple[str, ...], clock=time.time) -> None:
        if not windows:
            raise ValueError("no KPI windows")
        self.windows = windows
        self.default_window = "30d" if "30d" in windows else windows[0]
        self.clock = clock
        self.ring = TrendRing(capacity=int(TREND_SECONDS / SAMPLE_SECONDS), max_series=MAX_SERIES)
        self.directory = ScopeDirectory()
        self.sink: "RedisSink | None" = None
        self.failing = False  # a sampling failure was logged: say when it ends

    # -- sampling -------------------------------------------------------------------------------

    def trended_keys(self, scopes: dict[str, list[str]]) -> list[str]:
        """Every series the ring samples, global first, then regions, then territories (the order
        in which series are admitted when MAX_SERIES is reached)."""
        keys = []
        for scope in SCOPE_TYPES:
            for scope_id in scopes.get(scope, ()):
                for headline in HEADLINES:
                    if scope in headline.trended:
                        keys.extend(headline.key(window, scope, scope_id)
                                    for window in (self.windows if headline.windowed else self.windows[:1]))
        return keys

    async def sample(self) -> None:
        """One sample of every trended series from Redis (a faust timer calls this)."""
        sink = self.sink
        if sink is None:
            return
        now = self.clock()
        try:
            scopes = await self.directory.current(sink, now)
            keys = self.trended_keys(scopes)
            messages = await read_keys(sink, keys)
        except Exception as error:  # noqa: BLE001 - Redis down: no sample, a gap in the trends
            if not self.failing:
                log.warning("dashboard trends: reading Redis failed (%s: %s); sampling resumes when it answers",
                            type(error).__name__, error)
                self.failing = True
            return
        if self.failing:
            log.info("dashboard trends: reading Redis succeeds again")
            self.failing = False
        self.ring.record(now, {key: message.get("value") for key, message in zip(keys, messages) if message})

    # -- the page's data ------------------------------------------------------------------------

    def window_of(self, query) -> str:
        window = query.get("window", self.default_window)  # given empty: a bad window
        if window not in self.windows:
            raise ClientError(f"unknown window {window!r}: one of {', '.join(self.windows)}")
        return window

    async def data(self, window: str) -> dict:
        sink = self.sink
        if sink is None:
            raise RedisUnavailable("redis not connected")
        now = self.clock()
        try:
            scopes = await self.directory.current(sink, now)
            wanted = [(scope, scope_id, headline, headline.key(window, scope, scope_id))
                      for scope in SCOPE_TYPES for scope_id in scopes.get(scope, ()) for headline in HEADLINES]
            messages = await read_keys(sink, [key for *_, key in wanted])
        except Exception as error:  # noqa: BLE001
            raise RedisUnavailable(f"redis unavailable: {type(error).__name__}: {error}") from None

        ring = self.ring
        instants = ring.instants()
        chosen = picks(len(instants), TREND_POINTS)
        rows: dict[tuple[str, str], dict] = {}
        as_of = None
        for (scope, scope_id, headline, key), message in zip(wanted, messages):
            row = rows.setdefault((scope, scope_id), {"scope_id": scope_id, "cells": {}, "trends": {}})
            if message is not None:
                row["cells"][headline.id] = {
                    "key": key, "value": message.get("value"), "numerator": message.get("numerator"),
                    "denominator": message.get("denominator"), "as_of": message.get("as_of"),
                }
                as_of = max(as_of or "", message.get("as_of") or "") or None
            if key in ring:
                points = ring.points(key)
                row["trends"][headline.id] = [points[i] for i in chosen]
        by_scope: dict[str, list[dict]] = {scope: [] for scope in SCOPE_TYPES}
        for (scope, _), row in rows.items():
            if row["cells"]:
                by_scope[scope].append(row)

        mover_keys = {MOVERS_HEADLINE.key(window, "territory", scope_id): scope_id
                      for scope_id in scopes.get("territory", ())}
        movers = []
        for move in worst_movers(ring, mover_keys, WORST_MOVERS):
            points = ring.points(move.key)
            movers.append({
                "scope_id": mover_keys[move.key], "key": move.key, "first": move.first, "last": move.last,
                "change": move.change, "change_ratio": move.change_ratio,
                "since": _instant(move.first_at), "trend": [points[i] for i in chosen],
            })
        return {
            "window": window,
            "windows": list(self.windows),
            "as_of": as_of,
            "read_at": _instant(now),
            "headlines": [{"id": h.id, "kpi": h.kpi, "kind": h.kind, "label": h.label, "unit": h.unit,
                           "windowed": h.windowed} for h in HEADLINES],
            "trend": {
                "instants": [_instant(instants[i]) for i in chosen],
                "seconds": TREND_SECONDS, "sample_seconds": SAMPLE_SECONDS, "samples": len(instants),
                "series": len(ring), "max_series": ring.max_series, "refused": ring.refused,
            },
            "scopes": by_scope,
            "movers": {"kpi": MOVERS_HEADLINE.kpi, "scope": "territory", "rows": movers},
        }


class RedisUnavailable(Exception):
    """Redis cannot be read now: 503."""


async def read_keys(sink: "RedisSink", keys: list[str]) -> list[dict | None]:
    """The latest message of each key (None where Redis has none), in order."""
    out: list[dict | None] = []
    for start in range(0, len(keys), HMGET_CHUNK):
        chunk = keys[start:start + HMGET_CHUNK]
        bodies = await sink.client.hmget(sink.hash_name, chunk)
        out.extend(None if body is None else orjson.loads(body) for body in bodies)
    return out


def _glob_escape(text: str) -> str:
    """Redis MATCH patterns: the glob characters taken literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _instant(seconds: float) -> str:
    return format_rfc3339_us(int(seconds * 1_000_000))


def static_files() -> dict[str, bytes]:
    folder = resources.files("stream.worker").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}


def add_dashboard(app, worker: "KpiWorker") -> Dashboard:
    """The dashboard's pages and its sampling timer, on the worker's app."""
    dashboard = Dashboard(tuple(format_duration(w) for w in worker.settings.kpi.windows_seconds))
    files = static_files()

    def serve(name: str):
        body, content_type = files[name], STATIC_FILES[name]

        async def static_page(view, request):
            # the charset in the header itself: aiohttp refuses one in `content_type`
            return view.bytes(body, headers={"Content-Type": content_type, **SECURITY_HEADERS})
        static_page.__name__ = f"dashboard_{name.replace('.', '_')}"
        return static_page

    app.page("/dashboard")(serve("dashboard.html"))
    for name in ("dashboard.css", "dashboard.js"):
        app.page(f"/dashboard/{name}")(serve(name))

    @app.page("/dashboard/data")
    async def dashboard_data(view, request):
        dashboard.sink = worker.scope_stage.redis
        try:
            body = await dashboard.data(dashboard.window_of(request.query))
        except ClientError as error:
            return client_error(request, error)
        except RedisUnavailable as error:
            return view.json({"error": str(error)}, status=503)
        return view.bytes(orjson.dumps(body), content_type="application/json",
                          headers={"Cache-Control": "no-store"})

    async def sample_trends() -> None:
        dashboard.sink = worker.scope_stage.redis
        await dashboard.sample()

    app.timer(SAMPLE_SECONDS, name="dashboard-trends")(sample_trends)
    return dashboard


def headline_keys(window: str, scopes: dict[str, Iterable[str]]) -> list[str]:
    """The keys the page shows for a window (tests compare them with /kpi)."""
    return [h.key(window, scope, scope_id) for scope in SCOPE_TYPES for scope_id in scopes.get(scope, ())
            for h in HEADLINES]

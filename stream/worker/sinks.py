"""Outputs of the scope stage: the compacted kpi.updates topic, Redis, and Prometheus gauges.

Redis layout: one hash `{prefix}kpi:latest`, field = the kpi.updates key, value = the JSON
update message. Writes are pipelined per publication round; while Redis is down the latest
message per key is kept (bounded by the number of keys) and written when it is back.
"""

from __future__ import annotations

import asyncio

import logging
from typing import Callable

import orjson
from prometheus_client import CollectorRegistry, Gauge

from stream.core.calendar import is_designator
from stream.core.catalogue import ALL_KPIS, UNWINDOWED_KPIS
from stream.core.kpis import KpiValue
from stream.core.targets import TARGET_KPIS
from stream.worker.metrics import KPI_GAUGE_PREFIX, NO_WINDOW_LABEL, ProcessorMetrics

log = logging.getLogger(__name__)

REDIS_HASH = "kpi:latest"


class KpiGauges:
    """`kpi_<name>{window, scope, scope_id[, horizon | kind]}` for the exported scope types."""

    def __init__(self, registry: CollectorRegistry, export_scopes: tuple[str, ...]) -> None:
        self.export_scopes = set(export_scopes)
        self.gauges: dict[str, Gauge] = {}
        # (kpi, window, scope, scope_id, horizon, kind) -> the labelled series: labels() takes a
        # lock and builds its key on every call, 2 of the ~7 us a published update costs here
        self._series: dict[tuple, Gauge] = {}
        for kpi in ALL_KPIS + TARGET_KPIS:
            labels = ["window", "scope", "scope_id"]
            if kpi == "first_order_conversion":
                labels.append("horizon")
            if kpi.startswith("activities"):
                labels.append("kind")
            window_note = "" if kpi not in UNWINDOWED_KPIS else " (window label 'none')"
            self.gauges[kpi] = Gauge(
                f"{KPI_GAUGE_PREFIX}{kpi}", f"KPI {kpi} (spec section 3){window_note}", labels, registry=registry
            )

    @staticmethod
    def _labels(value: KpiValue) -> list[str]:
        labels = [value.window or NO_WINDOW_LABEL, value.scope, value.scope_id]
        if value.horizon is not None:
            labels.append(value.horizon)
        if value.kind is not None:
            labels.append(value.kind)
        return labels

    @staticmethod
    def _series_key(value: KpiValue) -> tuple:
        return value.kpi, value.window, value.scope, value.scope_id, value.horizon, value.kind

    def set(self, value: KpiValue) -> None:
        if value.scope not in self.export_scopes or (value.window is not None and is_designator(value.window)):
            return  # designated periods: the topic, Redis and /kpi only (spec 8, bounded label values)
        if value.value is None:
            self.remove(value)
            return
        key = self._series_key(value)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.gauges[value.kpi].labels(*self._labels(value))
        series.set(value.value)

    def remove(self, value: KpiValue) -> None:
        """Drop the series (a null ratio, or a scope whose partition moved to another worker)."""
        if value.scope not in self.export_scopes:
            return
        self._series.pop(self._series_key(value), None)
        try:
            self.gauges[value.kpi].remove(*self._labels(value))
        except KeyError:
            pass


class RedisSink:
    """Latest values in Redis. After any outage -- a failed write, or a Redis that restarted
    (its run_id changed), possibly empty -- the next successful write rewrites every latest
    value this worker publishes (`snapshot()`), not only the changes made meanwhile."""

    def __init__(self, client, prefix: str, metrics: ProcessorMetrics, snapshot: Callable[[], dict[str, bytes]]) -> None:
        self.client = client
        self.hash_name = f"{prefix}{REDIS_HASH}"
        self.metrics = metrics
        self.snapshot = snapshot
        # key -> latest body not yet written: bounded by the number of keys, however slow Redis is
        self.backlog: dict[str, bytes] = {}
        self.in_flight: dict[str, bytes] = {}  # the write under way
        self.waiting = 0  # distinct keys in the backlog or in flight: a key can be in both
        self.write_lock = asyncio.Lock()
        self.up = False
        self.needs_full_write = True
        self.run_id: str | None = None
        # an outage is logged once, also the first one: a Redis never reached since start (wrong
        # address, password or CA) must say why in the log, not only in /ready and redis_up
        self.down_logged = False

    def offer(self, messages: dict[str, bytes]) -> None:
        """Queue latest values for the writer; a newer value of a key replaces the queued one."""
        backlog, in_flight = self.backlog, self.in_flight
        self.waiting += sum(1 for key in messages if key not in backlog and key not in in_flight)
        backlog.update(messages)
        self.metrics.redis_backlog.set(self.waiting)

    def _count_backlog(self) -> None:
        in_flight = self.in_flight
        self.waiting = len(self.backlog.keys() | in_flight.keys()) if in_flight else len(self.backlog)
        self.metrics.redis_backlog.set(self.waiting)

    async def write(self, messages: dict[str, bytes] | None = None) -> None:
        if messages:
            self.offer(messages)
        async with self.write_lock:  # one write in flight; values offered meanwhile wait for the next
            if self.needs_full_write:
                self.backlog = {**self.snapshot(), **self.backlog}
                self._count_backlog()
            if not self.backlog:
                return
            pending, self.backlog = self.backlog, {}
            self.in_flight = pending
            try:
                await self.client.hset(self.hash_name, mapping=pending)
            except Exception as error:  # noqa: BLE001 - any Redis failure: keep the backlog, report down
                self.backlog = {**pending, **self.backlog}
                self._down(f"redis write failed, {len(self.backlog)} keys kept for retry: {_describe(error)}")
                return
            finally:
                self.in_flight = {}
                self._count_backlog()
            self._up("redis writes succeed again")

    def _up(self, back: str) -> None:
        if self.down_logged:  # an outage was logged: say it ended
            log.info("%s", back)
        self.up = True
        self.down_logged = False
        self.needs_full_write = False
        self.metrics.redis_up.set(1)

    def _down(self, why: str) -> None:
        if not self.down_logged:  # say it once per outage, not every round
            log.warning("%s", why)
            self.down_logged = True
        self.up = False
        self.needs_full_write = True
        self.metrics.redis_up.set(0)

    async def check(self) -> None:
        """Ping; notice a restarted Redis by its run_id; rewrite everything when needed."""
        try:
            run_id = (await self.client.info("server")).get("run_id")
        except Exception as error:  # noqa: BLE001
            self._down(f"redis unreachable ({_describe(error)}); values are kept and rewritten when it is back")
            return
        if run_id != self.run_id:
            if self.run_id is not None:
                log.info("redis restarted (run_id changed): rewriting every latest value")
            self.run_id = run_id
            self.needs_full_write = True
        if self.needs_full_write or self.backlog:
            await self.write({})
        if not self.up and not self.backlog:
            # reachable and nothing to write (no values yet): up, or an idle worker would report
            # Redis down -- and fire RedisDown -- until its first value
            self._up("redis reachable again")

    async def keys(self) -> list[str]:
        """Every key in the hash (HKEYS: the keys only, no values)."""
        return [key.decode() if isinstance(key, bytes) else key for key in await self.client.hkeys(self.hash_name)]

    async def key_count(self) -> int:
        """How many keys the hash holds (HLEN, O(1))."""
        return int(await self.client.hlen(self.hash_name))

    async def read(self, keys: list[str]) -> list[bytes | None]:
        """The latest message bodies of these keys, in order (None: no such key)."""
        return list(await self.client.hmget(self.hash_name, keys)) if keys else []

    async def read_all(self) -> dict[str, dict]:
        raw = await self.client.hgetall(self.hash_name)
        return {key.decode() if isinstance(key, bytes) else key: orjson.loads(value) for key, value in raw.items()}


def _describe(error: BaseException) -> str:
    """An error for the log: its type and message (redis-py's never contain the password)."""
    return f"{type(error).__name__}: {error}"

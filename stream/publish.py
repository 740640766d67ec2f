"""Outputs of the scope stage: the compacted kpi.updates topic, Redis, and Prometheus gauges.

Redis layout: one hash `{prefix}kpi:latest`, field = the kpi.updates key, value = the JSON
update message. Writes are pipelined per publication round; while Redis is down the latest
message per key is kept (bounded by the number of keys) and written when it is back.
"""

from __future__ import annotations

import logging
import orjson
from prometheus_client import CollectorRegistry, Gauge

from .catalogue import ALL_KPIS, UNWINDOWED_KPIS
from .kpis import KpiValue
from .metrics import KPI_GAUGE_PREFIX, NO_WINDOW_LABEL, ProcessorMetrics

log = logging.getLogger(__name__)

REDIS_HASH = "kpi:latest"


class KpiGauges:
    """`kpi_<name>{window, scope, scope_id[, horizon | kind]}` for the exported scope types."""

    def __init__(self, registry: CollectorRegistry, export_scopes: tuple[str, ...]) -> None:
        self.export_scopes = set(export_scopes)
        self.gauges: dict[str, Gauge] = {}
        for kpi in ALL_KPIS:
            labels = ["window", "scope", "scope_id"]
            if kpi == "first_order_conversion":
                labels.append("horizon")
            if kpi == "activities":
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

    def set(self, value: KpiValue) -> None:
        if value.scope not in self.export_scopes:
            return
        if value.value is None:
            self.remove(value)
        else:
            self.gauges[value.kpi].labels(*self._labels(value)).set(value.value)

    def remove(self, value: KpiValue) -> None:
        """Drop the series (a null ratio, or a scope whose partition moved to another worker)."""
        if value.scope not in self.export_scopes:
            return
        try:
            self.gauges[value.kpi].remove(*self._labels(value))
        except KeyError:
            pass


class RedisSink:
    def __init__(self, client, prefix: str, metrics: ProcessorMetrics) -> None:
        self.client = client
        self.hash_name = f"{prefix}{REDIS_HASH}"
        self.metrics = metrics
        self.backlog: dict[str, bytes] = {}
        self.up = False

    async def write(self, messages: dict[str, bytes]) -> None:
        self.backlog.update(messages)
        if not self.backlog:
            return
        try:
            await self.client.hset(self.hash_name, mapping=self.backlog)
        except Exception as error:  # noqa: BLE001 - any Redis failure: keep the backlog, report down
            if self.up:  # say it once per outage, not every round
                log.warning("redis write failed, %d keys kept for retry: %s", len(self.backlog), error)
            self.up = False
            self.metrics.redis_up.set(0)
            return
        self.backlog.clear()
        self.up = True
        self.metrics.redis_up.set(1)

    async def ping(self) -> bool:
        try:
            await self.client.ping()
        except Exception:  # noqa: BLE001
            self.up = False
            self.metrics.redis_up.set(0)
            return False
        self.up = True
        self.metrics.redis_up.set(1)
        return True

    async def read_all(self) -> dict[str, dict]:
        raw = await self.client.hgetall(self.hash_name)
        return {key.decode() if isinstance(key, bytes) else key: orjson.loads(value) for key, value in raw.items()}


"""What every part of a running worker shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.core.clock import Clock
from stream.core.config import KpiSettings, ServiceSettings
from stream.kafka.topics import TopicNames
from stream.worker.metrics import MetricTally, ProcessorMetrics


@dataclass(slots=True, frozen=True)
class WorkerContext:
    app: Any  # the faust.App
    settings: ServiceSettings
    metrics: ProcessorMetrics
    tally: MetricTally  # per-event counts, added to their series before each scrape
    clock: Clock
    topics: TopicNames
    kpi: KpiSettings = field(init=False)  # settings.kpi, read on every event

    def __post_init__(self) -> None:
        object.__setattr__(self, "kpi", self.settings.kpi)

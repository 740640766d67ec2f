"""Topic names and their creation. The service creates what it needs at start-up (idempotent):

| topic | partitions | cleanup | retention | key |
|---|---|---|---|---|
| sales.outlets, sales.orders, sales.visits | KPI_PARTITIONS | delete | 7 days | outlet_id |
| sales.leads | KPI_PARTITIONS | delete | 7 days | lead_id |
| sales.activities | KPI_PARTITIONS | delete | 7 days | rep_id |
| sales.targets | KPI_PARTITIONS | delete | 7 days | `{kpi}\\|{period}\\|{scope}\\|{scope_id}[\\|kind]` |
| sales.events (any type; routed by `type`) | KPI_PARTITIONS | delete | 7 days | any |
| kpi.updates | KPI_PARTITIONS | compact | latest per key kept | `{kpi}\\|{window}\\|{scope}\\|{scope_id}[\\|x]` |
| kpi.deadletter (partition: the source's) | KPI_PARTITIONS | delete | 30 days | source key |
| {app_id}-scope-partials (internal) | KPI_PARTITIONS | delete | 1 day | family+scope |
| {app_id}-*-changelog (Faust tables) | KPI_PARTITIONS | compact | - | table key |

Input partition counts must all be equal (co-partitioning of the outlet topics); a mismatch
stops start-up with an error naming the topics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

INPUT_TOPICS = ("sales.outlets", "sales.orders", "sales.visits", "sales.leads", "sales.activities", "sales.targets",
                "sales.events")
# The worker's Faust tables (stream/worker/app.py); their changelog topics are created here, before
# Faust starts: a consumer that subscribes before a changelog topic exists records it with 0
# partitions until its next metadata refresh, and Faust's table then fails every write with
# PartitionsMismatch (seen on a fresh broker).
TABLES = ("outlet-facts", "lead-facts", "activity-facts", "target-facts", "scope-partials")
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str
    app_id: str

    def input(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def updates(self) -> str:
        return f"{self.prefix}kpi.updates"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}kpi.deadletter"

    @property
    def partials(self) -> str:
        return f"{self.app_id}-scope-partials"

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    def specs(self, partitions: int) -> dict[str, dict[str, str]]:
        """topic -> config, for every topic the service creates itself."""
        week = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
        specs = {self.input(name): dict(week) for name in INPUT_TOPICS}
        specs[self.updates] = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000", "segment.ms": str(DAY_MS)}
        specs[self.deadletter] = {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}
        specs[self.partials] = {"cleanup.policy": "delete", "retention.ms": str(DAY_MS)}
        for table in TABLES:
            specs[self.changelog(table)] = {"cleanup.policy": "compact"}
        return specs


class TopicLayoutError(RuntimeError):
    """Existing topics do not have the layout the service needs."""


async def ensure_topics(admin, names: TopicNames, partitions: int, replication: int) -> list[str]:
    """Create missing topics; check the partition counts of existing input topics. Returns created."""
    from aiokafka.admin import NewTopic

    specs = names.specs(partitions)
    existing = set(await admin.list_topics())
    missing = [name for name in specs if name not in existing]
    if missing:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication, topic_configs=specs[name])
             for name in missing]
        )
        log.info("created topics: %s", ", ".join(missing))
        await _wait_until_described(admin, missing, partitions)
    inputs = [names.input(name) for name in INPUT_TOPICS if name != "sales.events"]
    described = await admin.describe_topics(inputs)
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    if len(set(counts.values())) > 1:
        raise TopicLayoutError(f"input topics must have equal partition counts (co-partitioned by key): {counts}")
    return missing


async def _wait_until_described(admin, topics: list[str], partitions: int, timeout: float = 30.0) -> None:
    """Created topics reach every broker's metadata a moment later; start only once they have."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics(topics)
        ready = {d["topic"] for d in described if d.get("error_code", 0) == 0 and len(d["partitions"]) == partitions}
        if ready >= set(topics):
            return
        if time.monotonic() > deadline:
            raise TopicLayoutError(f"created topics not visible after {timeout:.0f}s: {sorted(set(topics) - ready)}")
        await asyncio.sleep(0.2)

"""`kpi-stream replay` (spec 7): the same decode and engine as the worker, from a file, no broker."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

import orjson

from stream.core.clock import clock_for, reference_instant_us
from stream.core.config import KpiSettings
from stream.core.decode import Rejected, decode_event, rejection_record
from stream.core.engine import KpiEngine, Outcome
from stream.core.outlets import DEFAULT_HOT_OUTLETS
from stream.core.gcpause import cyclic_gc_paused
from stream.stages.updates import round_stamp, update_key, update_message

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayReport:
    lines: int = 0
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def replay_lines(lines: Iterable[bytes], settings: KpiSettings, deadletter: BinaryIO | None,
                 hot_outlets: int = DEFAULT_HOT_OUTLETS) -> tuple[KpiEngine, ReplayReport]:
    """Decode and apply every line (its bytes exactly, without the newline), in order. One engine
    holds every outlet of the file: `hot_outlets` of them stay objects (KPI_HOT_OUTLETS)."""
    with cyclic_gc_paused():  # a bulk load of acyclic engine state: see stream/core/gcpause.py
        return _replay_lines(lines, settings, deadletter, hot_outlets)


def _replay_lines(lines: Iterable[bytes], settings: KpiSettings, deadletter: BinaryIO | None,
                  hot_outlets: int) -> tuple[KpiEngine, ReplayReport]:
    clock = clock_for(settings.clock)
    engine = KpiEngine(settings, clock.now_us(), hot_outlets)
    report = ReplayReport()
    started = time.perf_counter()
    for number, raw in enumerate(lines, start=1):
        report.lines = number
        try:
            event = decode_event(raw, reference_instant_us(settings.clock, None), settings)
        except Rejected as rejected:
            report.rejected[rejected.reason] = report.rejected.get(rejected.reason, 0) + 1
            if deadletter is not None:
                deadletter.write(orjson.dumps(rejection_record(
                    raw, rejected.reason, rejected.detail, topic=None, partition=None, offset=None, line=number)))
                deadletter.write(b"\n")
            continue
        outcome = engine.apply(event)
        if outcome is Outcome.DUPLICATE:
            report.ignored["duplicate"] = report.ignored.get("duplicate", 0) + 1
            continue
        if outcome in (Outcome.ALREADY_CLOSED, Outcome.DUPLICATE_ORDER):
            report.ignored[outcome.value] = report.ignored.get(outcome.value, 0) + 1
        report.applied += 1
        clock.observe(event.occurred_us)
    engine.advance(clock.now_us())
    report.seconds = time.perf_counter() - started
    return engine, report


def read_lines(path: Path) -> Iterable[bytes]:
    """Lines of a file as raw bytes, newline removed (a final line without newline counts)."""
    with open(path, "rb") as handle:
        for line in handle:
            yield line[:-1] if line.endswith(b"\n") else line


def write_final_updates(engine: KpiEngine, out: BinaryIO) -> int:
    stamp = round_stamp(engine.now_us, time.time_ns() // 1000, source="/kpi-stream/replay")
    messages = sorted((update_key(value), update_message(value, stamp)) for value in engine.all_values())
    for _key, message in messages:
        out.write(orjson.dumps(message))
        out.write(b"\n")
    return len(messages)


def run_replay(path: Path, settings: KpiSettings, deadletter_path: Path | None,
               hot_outlets: int = DEFAULT_HOT_OUTLETS) -> ReplayReport:
    deadletter = open(deadletter_path, "wb") if deadletter_path else None
    try:
        engine, report = replay_lines(read_lines(path), settings, deadletter, hot_outlets)
    finally:
        if deadletter is not None:
            deadletter.close()
    written = write_final_updates(engine, sys.stdout.buffer)
    sys.stdout.flush()
    log.info(
        "replay done: %d lines, %d applied, rejected %s, ignored %s, %d KPI keys, %.2fs (%.0f lines/s)",
        report.lines, report.applied, report.rejected, report.ignored, written, report.seconds,
        report.lines / report.seconds if report.seconds else 0.0,
    )
    return report

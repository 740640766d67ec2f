"""`kpi-stream replay` speed on a generated file, against the Python ceiling in the same run.

    .venv/bin/python bench/replay.py --events 1000000
    KPI_PERIODS= .venv/bin/python bench/replay.py --events 1000000    # without calendar periods

KPI settings come from the environment (KPI_WINDOWS, KPI_PERIODS, KPI_TIMEZONE...), as for
`kpi-stream replay`.

Ceiling: reading the same lines and orjson-decoding each (no validation, no engine). Also
prints decode-only (the real validator) so the engine's share is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import orjson

from harness import command, machine  # first: it puts the repository on sys.path
from stream.core.config import ClockSetting, KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.devtools import generator
from stream.replay import read_lines, replay_lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    args = parser.parse_args()
    config = generator.GeneratorConfig(seed=11, events=args.events, outlets=args.outlets)
    with tempfile.TemporaryDirectory(prefix="kpi-replay-") as workdir:  # ~300 MB per million events
        path = Path(workdir) / "events.jsonl"
        generator.write_jsonl(generator.generate(config), path)
        lines = list(read_lines(path))
    now = generator.now_us(config)
    # the KPI settings of the environment (KPI_PERIODS=... to compare), the clock pinned at the end
    settings = dataclasses.replace(KpiSettings.from_env(), clock=ClockSetting("pinned", now))

    started = time.perf_counter()
    for raw in lines:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    ceiling = len(lines) / (time.perf_counter() - started)

    started = time.perf_counter()
    for raw in lines:
        try:
            decode_event(raw, now, settings)
        except Rejected:
            pass
    decode_only = len(lines) / (time.perf_counter() - started)

    started = time.perf_counter()
    engine, report = replay_lines(iter(lines), settings, None)
    values = engine.all_values()
    replay = len(lines) / (time.perf_counter() - started)

    print(f"command: {command()}")
    print(f"machine: {machine()}")
    print(f"periods: {','.join(settings.periods) or '(none)'} in {settings.timezone}, history {settings.period_history}")
    print(f"lines: {len(lines)} ({report.applied} applied, rejected {sum(report.rejected.values())}, "
          f"ignored {sum(report.ignored.values())}), {len(values)} KPI values")
    print(f"ceiling (orjson.loads only): {ceiling:10.0f} lines/s")
    print(f"decode only (validation):    {decode_only:10.0f} lines/s")
    print(f"replay (decode + engine):    {replay:10.0f} lines/s   ratio to ceiling {replay / ceiling:.3f}, "
          f"to the 150k/s target {replay / 150_000:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every message `kpi-stream replay` writes -- rolling windows, calendar periods, aliases, lmtd --
is valid against schemas/kpi_update.v1.json (its evolution: schemas/README.md), and the schema
still accepts every window the worker wrote before periods existed."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream.core.config import ClockSetting, KpiSettings
from stream.devtools import generator
from stream.replay import replay_lines, write_final_updates

SCHEMA = orjson.loads((Path(__file__).resolve().parents[2] / "schemas" / "kpi_update.v1.json").read_bytes())


def test_every_replayed_message_is_valid_against_the_kpi_update_schema():
    config = generator.GeneratorConfig(seed=5, events=3000)
    lines = [m.value for m in generator.generate(config)]
    settings = KpiSettings(clock=ClockSetting("pinned", generator.now_us(config)),
                           periods=("day", "week", "month", "quarter", "year"))
    engine, _report = replay_lines(iter(lines), settings, None)
    out = io.BytesIO()
    write_final_updates(engine, out)
    messages = [orjson.loads(line) for line in out.getvalue().splitlines()]
    validator = Draft202012Validator(SCHEMA)
    for message in messages:
        validator.validate(message)
    windows = {message["window"] for message in messages}
    assert {"7d", "today", "wtd", "mtd", "qtd", "ytd", "lmtd", None} <= windows
    assert any(window and "-W" in window for window in windows)
    assert any(window and "-Q" in window for window in windows)


@pytest.mark.parametrize("window", ["7d", "90s", "12h", "5m", "2026-11-23", "2026-W48", "2026-11", "2026-Q4",
                                    "2026", "today", "wtd", "mtd", "qtd", "ytd", "lmtd", None])
def test_the_schema_accepts_old_and_new_windows(window):
    message = {"v": 1, "kpi": "orders", "window": window, "scope": "global", "scope_id": "all",
               "as_of": "2026-11-23T07:15:00Z", "value": 1, "numerator": None, "denominator": None,
               "horizon": None, "kind": None, "computed_at": "2026-11-23T07:15:00.412Z"}
    Draft202012Validator(SCHEMA).validate(message)


@pytest.mark.parametrize("window", ["2026-9", "month", "2026-Q5", "W48", ""])
def test_the_schema_rejects_what_no_window_looks_like(window):
    message = {"v": 1, "kpi": "orders", "window": window, "scope": "global", "scope_id": "all",
               "as_of": "2026-11-23T07:15:00Z", "value": 1, "numerator": None, "denominator": None,
               "horizon": None, "kind": None, "computed_at": "2026-11-23T07:15:00.412Z"}
    assert not Draft202012Validator(SCHEMA).is_valid(message)

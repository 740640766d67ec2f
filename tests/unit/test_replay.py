"""`kpi-stream replay` (spec 7): final KPI messages on stdout, dead letters with line numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import jsonschema

from stream.devtools import generator
from stream.core.timeparse import format_rfc3339_us
from tests.kpi_compare import kpi_differences, values_by_key
from tests.oracle import OracleSettings, judge, oracle_kpis
from stream.core.timeparse import parse_rfc3339_us

REPO = Path(__file__).resolve().parents[2]
REASONS = {"malformed_json", "not_an_object", "unknown_type", "missing_field", "bad_type", "bad_value",
           "bad_timestamp", "future_event", "currency_mismatch", "oversized"}


def run_replay(events: Path, deadletter: Path, clock: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KPI_CLOCK=clock, **extra_env)
    return subprocess.run([sys.executable, "-m", "stream", "replay", str(events), "--deadletter", str(deadletter)],
                          cwd=REPO, env=env, capture_output=True, timeout=300)


def test_replay_of_a_generated_file_writes_the_oracle_values_and_every_reject(tmp_path):
    config = generator.GeneratorConfig(seed=99, events=8000)
    messages = list(generator.generate(config))
    events = tmp_path / "events.jsonl"
    generator.write_jsonl(messages, events)
    as_of = format_rfc3339_us(generator.now_us(config))

    # every outlet packed at rest as soon as two others were touched (stream/core/outlet_packing.py)
    result = run_replay(events, tmp_path / "dead.jsonl", as_of, KPI_HOT_OUTLETS="0")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    updates = [orjson.loads(line) for line in result.stdout.splitlines()]
    # one validator for every message: jsonschema.validate checks the schema itself on each call
    validator = jsonschema.Draft202012Validator(orjson.loads((REPO / "schemas" / "kpi_update.v1.json").read_bytes()))
    for update in updates:
        validator.validate(update)
    keys = values_by_key(updates)
    assert len(keys) == len(updates), "one final message per key"
    lines = [m.value for m in messages]
    assert kpi_differences(keys, oracle_kpis(lines, as_of, OracleSettings())) == []

    dead = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    rejected_by_oracle = {n for n, raw in enumerate(lines, start=1)
                          if judge(raw, parse_rfc3339_us(as_of), OracleSettings())[0] is None}
    assert {d["line"] for d in dead} == rejected_by_oracle
    assert {d["reason"] for d in dead} <= REASONS
    assert len({d["reason"] for d in dead}) >= 8, "the generator mixes in most reasons"


def test_replay_dead_letter_lines_carry_the_line_number_and_reason(tmp_path):
    good = orjson.dumps({"event_id": "a", "type": "activity.logged", "occurred_at": "2026-11-24T11:00:00Z",
                         "rep_id": "r1", "kind": "call"})
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([
        good,                                   # 1
        b"not json",                            # 2 malformed_json
        b"42",                                  # 3 not_an_object
        b'{"event_id":"b","type":"nope","occurred_at":"2026-11-24T11:00:00Z"}',  # 4 unknown_type
        good,                                   # 5 duplicate: ignored, not a dead letter
        b'{"event_id":"c","type":"activity.logged","occurred_at":"2026-11-24T11:00:00Z","rep_id":"r1","kind":"fax"}',  # 6
    ]))  # no final newline: the last line still counts
    result = run_replay(events, tmp_path / "dead.jsonl", "2026-11-24T12:00:00Z")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    dead = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (2, "malformed_json"), (3, "not_an_object"), (4, "unknown_type"), (6, "bad_value")]
    final = values_by_key([orjson.loads(line) for line in result.stdout.splitlines()])
    assert final["activities|7d|global|all|call"]["value"] == 1

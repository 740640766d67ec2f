"""Every mistake a user can mend ends in one line that names it -- the variable and its value, the
file, the argument -- with no traceback and exit status 2; a closed output pipe ends quietly; a
worker that cannot reach Kafka says so in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def kpi_stream(*args: str, env: dict[str, str] | None = None, **run) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("KPI_", "KAFKA_"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "stream", *args], env=environment, cwd=REPO, capture_output=True,
                          text=True, timeout=60, **run)


def assert_one_line(result: subprocess.CompletedProcess, status: int, *naming: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for text in naming:
        assert text in lines[0]
    return lines[0]


BAD_SETTINGS = [
    ("KPI_SLOT_SECONDS", "sixty"), ("KPI_WINDOWS", "banana"), ("KPI_CONVERSION_HORIZONS", "7x"),
    ("KPI_DORMANCY", ""), ("KPI_BASE_CURRENCY", "usd"), ("KPI_FUTURE_TOLERANCE", "soon"),
    ("KPI_MAX_EVENT_BYTES", "lots"), ("KPI_DEDUPE_HORIZON", "1w"), ("KPI_CLOCK", "yesterday"),
    ("KPI_EXPORT_SCOPES", "planet"), ("KPI_PUBLISH_INTERVAL", "fast"), ("KPI_PUBLISH_INTERVAL", "0"),
    ("KPI_PARTITIONS", "0"), ("KPI_REPLICATION_FACTOR", "-1"), ("KPI_WEB_PORT", "abc"),
    ("KPI_WEB_PORT", "70000"), ("KPI_LOG_LEVEL", "loud"), ("KPI_STORE", "redis://"),
    ("KPI_SESSION_TIMEOUT", "0"), ("KPI_FETCH_MAX_WAIT_MS", "0"), ("KPI_FETCH_MIN_BYTES", "x"),
    ("KPI_SNAPSHOT_ON_STOP", "maybe"), ("KPI_SNAPSHOT_INTERVAL", "-1"), ("KPI_HOT_OUTLETS", "lots"),
    ("KPI_EVENT_LOOP", "trio"), ("KAFKA_SECURITY_PROTOCOL", "TLS"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS)
def test_a_bad_setting_is_named_with_its_value_in_one_line_and_exit_2(variable, value):
    line = assert_one_line(kpi_stream("worker", env={variable: value}), 2, variable)
    assert repr(value.strip()) in line or repr(value.strip().upper()) in line or repr(value) in line


def test_replay_of_a_missing_file_names_the_file():
    assert_one_line(kpi_stream("replay", "no-such-events.jsonl"), 2, "no-such-events.jsonl", "no such file")


def test_an_unknown_command_or_argument_is_one_line():
    assert_one_line(kpi_stream("bogus"), 2, "bogus", "--help")
    assert_one_line(kpi_stream("generate", "--events", "many"), 2, "--events", "many")


def test_replay_into_a_closed_pipe_ends_quietly(tmp_path):
    events = tmp_path / "events.jsonl"
    generated = kpi_stream("generate", "--events", "3000", "--outlets", "300", "--out", str(events))
    assert generated.returncode == 0, generated.stderr
    replay = subprocess.Popen([sys.executable, "-m", "stream", "replay", str(events)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "KPI_CLOCK": "2026-11-24T00:00:00Z"})
    replay.stdout.readline()
    replay.stdout.close()  # what `| head -1` does once it has its line
    _, stderr = replay.communicate(timeout=60)
    assert replay.returncode == 0
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr


def test_a_worker_that_cannot_reach_kafka_says_where_it_looked_in_one_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = kpi_stream("worker", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                                       "KPI_STATE_DIR": str(tmp_path)})
    assert_one_line(result, 1, f"127.0.0.1:{port}", "KAFKA_BOOTSTRAP_SERVERS")


def test_send_of_a_missing_file_names_the_file():
    assert_one_line(kpi_stream("send", "no-such-events.jsonl", "--kafka", "127.0.0.1:9"), 2,
                    "no-such-events.jsonl", "no such file")


def test_send_without_a_broker_address_asks_for_one():
    assert_one_line(kpi_stream("send", "-", "--topic-prefix", "x.", input=""), 2, "--kafka", "KAFKA_BOOTSTRAP_SERVERS")


def test_send_to_a_broker_that_cannot_be_reached_says_where_it_looked_in_one_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "order.placed", "outlet_id": "o1"}\n')
    assert_one_line(kpi_stream("send", str(events), "--kafka", f"127.0.0.1:{port}"), 1, f"127.0.0.1:{port}", "--kafka")

"""scripts/setup.sh is safe to run twice at once, repairs an incomplete Kafka folder, and says
which step failed. Each run here uses a cache folder of its own (KPI_STREAM_CACHE); the jars come
from Maven's local repository after the first fetch, so a run takes seconds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"

pytestmark = pytest.mark.deploy


def setup_run(cache: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(SETUP)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "KPI_STREAM_CACHE": str(cache), **env})


def finished(run: subprocess.Popen) -> str:
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output
    return output


def listed_jars(cache: Path) -> list[Path]:
    libs = cache / "kafka-4.1.1" / "libs"
    return [libs / name for name in (cache / "kafka-4.1.1" / "jars.txt").read_text().split()]


def test_two_setups_at_once_both_succeed_and_leave_one_complete_broker_folder(tmp_path):
    first, second = setup_run(tmp_path), setup_run(tmp_path)
    outputs = finished(first) + finished(second)
    assert "another set-up is running; waiting for it" in outputs
    jars = listed_jars(tmp_path)
    assert any(jar.name == "kafka_2.13-4.1.1.jar" for jar in jars)
    assert all(jar.stat().st_size > 0 for jar in jars)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("kafka")) == ["kafka-4.1.1"]


def test_a_broker_folder_missing_a_jar_is_fetched_again_whole(tmp_path):
    finished(setup_run(tmp_path))
    victim = next(jar for jar in listed_jars(tmp_path) if jar.name.startswith("scala-library"))
    victim.unlink()
    output = finished(setup_run(tmp_path))
    assert "fetching Apache Kafka 4.1.1 jars" in output
    assert victim.is_file() and victim.stat().st_size > 0


def test_a_failed_fetch_names_the_step_and_how_to_retry(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mvn").write_text("#!/bin/sh\necho 'Could not transfer artifact' >&2\nexit 1\n")
    (fake_bin / "mvn").chmod(0o755)
    run = setup_run(tmp_path / "cache", PATH=f"{fake_bin}:{os.environ['PATH']}")
    output, _ = run.communicate(timeout=600)
    assert run.returncode != 0
    assert "setup: failed while fetching the Apache Kafka 4.1.1 jars from Maven Central" in output
    assert "run scripts/setup.sh again" in output
    assert not (tmp_path / "cache" / "kafka-4.1.1").exists(), "nothing half-fetched is left in place"

"""Prometheus alert rules: promtool accepts them and their unit tests pass, every alert has firing
and silent cases, labels/annotations/runbooks are complete, and the rules only use metrics the
worker exports.

promtool is required (Debian package `prometheus`, installed by scripts/setup.sh): a missing
promtool fails these tests, it does not skip them.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy import dashboards_check as dc

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "kpi-alerts.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
OPERATIONS = ROOT / "docs" / "operations.md"

EXPECTED_ALERTS = {
    "ActiveAccountsDropWeekOverWeek", "ActiveAccountsSharpFall", "KpiSeriesStale", "ConsumerLagGrowing",
    "PartitionStalled", "DeadLetterRateHigh", "WorkerDown", "RedisDown", "ProjectedAttainmentBelowTarget",
}
EXPECTED_FOR = {
    "ActiveAccountsDropWeekOverWeek": "30m", "ActiveAccountsSharpFall": "15m", "ConsumerLagGrowing": "10m", "PartitionStalled": "5m",
    "DeadLetterRateHigh": "10m", "WorkerDown": "2m", "RedisDown": "5m", "ProjectedAttainmentBelowTarget": "1h",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (scripts/setup.sh does)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300)


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _render_rules_module():
    name = "kpi_stream_render_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PROM / "render_rules.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


# -- promtool ----------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool):
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_check_config(promtool):
    result = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests(promtool):
    assert RULE_TESTS, "no promtool test files in deploy/prometheus/tests"
    result = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_a_wrong_expectation_fails_the_unit_tests(promtool, tmp_path):
    """The promtool tests compare labels and annotations exactly; prove a wrong one fails."""
    source = (PROM / "tests" / "processor-alerts.yml").read_text(encoding="utf-8")
    broken = source.replace("severity: critical", "severity: info", 1).replace(
        "../rules/kpi-alerts.yml", str(RULES))
    (tmp_path / "broken.yml").write_text(broken, encoding="utf-8")
    result = _run(promtool, "test", "rules", str(tmp_path / "broken.yml"))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_prometheus_config_can_be_pointed_at_another_target(promtool, tmp_path):
    """What a live test does: copy the directory, rewrite the file_sd targets, check."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    (copy / "targets" / "kpi-stream.yml").write_text('- targets: ["127.0.0.1:16066"]\n', encoding="utf-8")
    result = _run(promtool, "check", "config", str(copy / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((copy / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "kpi-stream")
    assert job["file_sd_configs"][0]["files"] == ["targets/kpi-stream.yml"]
    assert config["rule_files"] == ["rules/*.yml"]


def test_live_test_variant_shortens_for_and_keeps_expressions(promtool, tmp_path):
    render = _render_rules_module()
    out = tmp_path / "live.yml"
    assert render.main(["--live-test", str(out), "--for", "30s"]) == 0
    result = _run(promtool, "check", "rules", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    live = [r for g in yaml.safe_load(out.read_text())["groups"] for r in g["rules"]]
    assert [r["expr"] for r in live] == [r["expr"] for r in _alerts()]
    assert all(render.duration_seconds(r["for"]) <= 30 for r in live)


# -- coverage of the unit tests ----------------------------------------------------------------------


def test_every_alert_has_firing_and_silent_cases():
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["rule_files"] == ["../rules/kpi-alerts.yml"], path
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - silent == set(), "alerts without a silent case"


# -- the rules themselves ----------------------------------------------------------------------------


def test_the_expected_alerts_exist_with_their_durations():
    alerts = {rule["alert"]: rule for rule in _alerts()}
    assert set(alerts) == EXPECTED_ALERTS
    for name, duration in EXPECTED_FOR.items():
        assert alerts[name]["for"] == duration, name
    assert "offset 7d" in alerts["ActiveAccountsDropWeekOverWeek"]["expr"]
    assert "max_over_time(" in alerts["ActiveAccountsSharpFall"]["expr"]
    assert 'up{job="kpi-stream"} == 0' in alerts["WorkerDown"]["expr"]
    projected = alerts["ProjectedAttainmentBelowTarget"]["expr"]
    assert 'window="mtd"' in projected and "< 0.90" in projected and "day_of_month(" in projected


def test_the_business_day_is_read_in_the_default_time_zone():
    """ProjectedAttainmentBelowTarget's `time() + OFFSET` is KPI_TIMEZONE's default's standard offset,
    and --timezone rewrites it (and nothing else) for another zone."""
    from stream.core.config import SETTINGS_DOC

    render = _render_rules_module()
    default_zone = next(default for name, default, _ in SETTINGS_DOC if name == "KPI_TIMEZONE")
    assert default_zone == render.DEFAULT_TIMEZONE
    offset = render.standard_offset_seconds(default_zone)
    assert offset == 7 * 3600
    (projected,) = [r["expr"] for r in _alerts() if r["alert"] == "ProjectedAttainmentBelowTarget"]
    assert f"day_of_month({render.local_time_expr(offset)}) > 3" in projected
    rules = render.load_rules()
    assert render.with_timezone(rules, default_zone) == rules
    for zone, expected in (("America/Sao_Paulo", "time() - 10800"), ("Europe/Berlin", "time() + 3600"),
                           ("UTC", "time())")):
        rewritten = render.with_timezone(rules, zone)
        changed = [(a["expr"], b["expr"]) for ga, gb in zip(rules["groups"], rewritten["groups"])
                   for a, b in zip(ga["rules"], gb["rules"]) if a != b]
        assert len(changed) == 1 and expected in changed[0][1], zone
        assert changed[0][1].replace(render.local_time_expr(render.standard_offset_seconds(zone)),
                                     render.local_time_expr(offset)) == changed[0][0]
    # DST zones: the standard offset, summer or winter
    from datetime import datetime, timezone
    for month in (1, 7):
        assert render.standard_offset_seconds("Europe/Berlin", datetime(2026, month, 15, tzinfo=timezone.utc)) == 3600


def test_rules_for_another_time_zone_pass_promtool(promtool, tmp_path):
    render = _render_rules_module()
    out = tmp_path / "rules.yml"
    assert render.main(["--timezone", "America/Sao_Paulo", "--rules-out", str(out)]) == 0
    result = _run(promtool, "check", "rules", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "day_of_month(vector(time() - 10800)) > 3" in out.read_text()
    assert render.main(["--timezone", "Not/AZone", "--rules-out", str(out)]) == 2


def test_alerts_have_severity_summary_description_and_runbook():
    docs = OPERATIONS.read_text(encoding="utf-8")
    anchors = {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", docs, re.M)}
    for rule in _alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), name
        assert "$labels" in notes["description"] or "$value" in notes["description"], name
        url = notes["runbook_url"]
        assert url.startswith("docs/operations.md#"), name
        anchor = url.split("#", 1)[1]
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/operations.md has no section #{anchor} for {name}"


def test_alert_expressions_use_exported_metrics_and_labels():
    text = dc.default_metrics_text()
    problems = []
    for rule in _alerts():
        problems += dc.check_expression(rule["alert"], rule["expr"], text)
    assert problems == []


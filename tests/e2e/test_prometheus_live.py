"""A real Prometheus (Debian's package) scraping a real worker, with the project's prometheus.yml
and alert rules: the KPI series arrive in Prometheus with the oracle's values, ActiveAccountsSharpFall
fires for the territory whose active accounts fall (and only for it), every Grafana panel and
annotation query matches the worker's live /metrics and is accepted by Prometheus's query API, and
the "Active accounts: where is it falling" panels give the oracle's change for that territory and
their annotation query shows the alert that fired for it.

The rules are the committed ones with `for:` shortened to a few seconds (render_rules.py
--live-test); scrape and evaluation intervals are shortened in the copied prometheus.yml.

Time: the panels compare with `offset 7d`, and a test cannot wait a week. They are evaluated as
committed (read from the dashboard JSON, `$window` = 30d, `$territory` = this test's territories)
with the one change of `offset 7d` to `offset Ns`, at a pinned evaluation instant (the query API's
`time`): the instant Prometheus was seen holding the fallen values, N seconds after an instant
between it being seen holding the values before the move and the move being sent. So "then" is the level before the outlets moved and
"now" the level after, exactly as a week apart would be; tests/deploy/test_dashboards.py checks that
the builder's expressions differ in nothing but that offset.

The worker exports the rep scope too (KPI_EXPORT_SCOPES), so the Reps dashboard is checked against
live series as well, and the rep series on /metrics are counted against the oracle's rep values.
With it comes `kpi_stream_rep_territory_outlets`: summed in Prometheus it equals the oracle's outlets
per (territory, assigned rep) before and after the move, and the Reps dashboard's `$rep` query, run
as Grafana runs it (the label values API over the dashboard's time range) for a territory, lists
exactly the reps the oracle assigns there -- for the territory that lost outlets, also the reps
whose outlets left it within the range.

The generator's world carries monthly targets per territory and rep (stream/devtools/generator.py,
`World.monthly_targets`): the "Targets: month to date" row of KPI overview (attainment, projected
attainment, MTD against LMTD, for each `$target`) and the Reps dashboard's rep attainment return
the oracle's target values, and ProjectedAttainmentBelowTarget fires for exactly the targets the
oracle projects below 90 % (after day 3 of the month by Prometheus's own clock; before that, for
none). Its beat plans, cancellations and returns (spec 10) make the "Field execution" row of KPI
overview return the oracle's call compliance, coverage, time in market and net sales against returns.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream.core.calendar import is_designator
from stream.devtools import generator
from stream.devtools.localstack import free_port
from stream.core.timeparse import format_rfc3339_us
from tests.deploy import dashboards_check as dc
from tests.e2e.harness import WorkerProcess, gauge_values, produce, unique_names, wait_until, worker_env
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis, territory_rep_outlets

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))

FALLING, STEADY, RECEIVING = "T-FALL", "T-STEADY", "T-RECEIVE"
OUTLETS_PER_TERRITORY = 30
MOVED = 20  # of FALLING's 30 active outlets: 30 -> 10, far below the rule's 95 % of the 3h maximum


def _assigned_rep(territory: str, n: int) -> str:
    """FALLING's outlets: R-FALL-1 for the first ten, R-FALL-2 for the next ten (all twenty move
    with their reps), R-FALL-3 for those that stay; STEADY's: R-STEADY, but one R-FALL-3 (a rep
    serving two territories)."""
    if territory == FALLING:
        return f"R-FALL-{min(n // 10, 2) + 1}"
    return "R-FALL-3" if n == 0 else "R-STEADY"


def _event(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def _territory_traffic(as_of_us: int) -> tuple[list[tuple[str, bytes, bytes]], list[tuple[str, bytes, bytes]]]:
    """Outlets in FALLING and STEADY, each with an order 3 days before as_of (active over 30d), and
    two month targets; then the reassignment that moves MOVED of FALLING's outlets to RECEIVING."""
    def at(days: float) -> str:
        return format_rfc3339_us(as_of_us - int(timedelta(days=days).total_seconds() * 1_000_000))

    before: list[tuple[str, bytes, bytes]] = []
    for territory in (FALLING, STEADY):
        for n in range(OUTLETS_PER_TERRITORY):
            outlet = f"{territory}-{n:02d}"
            before.append(("sales.outlets", outlet.encode(), _event({
                "event_id": f"on-{outlet}", "type": "outlet.onboarded", "occurred_at": at(20),
                "outlet_id": outlet, "region": "R-LIVE", "territory": territory,
                "rep_id": _assigned_rep(territory, n)})))
            before.append(("sales.orders", outlet.encode(), _event({
                "event_id": f"ord-{outlet}", "type": "order.placed", "occurred_at": at(3), "outlet_id": outlet,
                "order_id": f"o-{outlet}", "amount": "12.50", "currency": "USD", "lines": 2})))
    # month targets of our own (the generator's territories are all far behind theirs): STEADY's
    # sales on course (30 orders of 12.50 = 375 so far, about 480 by the month's end: 120 %),
    # FALLING's orders far behind
    month = datetime.fromtimestamp(as_of_us / 1_000_000, ZoneInfo("Asia/Jakarta")).strftime("%Y-%m")
    for kpi, territory, value in (("sales_amount", STEADY, "400.00"), ("orders", FALLING, 200)):
        before.append(("sales.targets", f"{kpi}|{month}|territory|{territory}".encode(), _event({
            "event_id": f"tgt-{kpi}-{territory}", "type": "target.set", "occurred_at": at(10), "kpi": kpi,
            "period": month, "scope": "territory", "scope_id": territory, "value": value})))
    moves = [("sales.outlets", f"{FALLING}-{n:02d}".encode(), _event({
        "event_id": f"move-{FALLING}-{n:02d}", "type": "outlet.updated", "occurred_at": at(1),
        "outlet_id": f"{FALLING}-{n:02d}", "territory": RECEIVING})) for n in range(MOVED)]
    return before, moves


class LocalPrometheus:
    """Debian's /usr/bin/prometheus on a free port, with a copy of deploy/prometheus/."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.config_dir = workdir / "prometheus"
        shutil.copytree(PROMETHEUS_DIR, self.config_dir)
        (self.config_dir / "targets" / "kpi-stream.yml").write_text(yaml.safe_dump([{"targets": [target]}]))
        config = yaml.safe_load((self.config_dir / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        for job in config["scrape_configs"]:
            if job["job_name"] == "prometheus":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{self.port}"]}]
            for sd in job.get("file_sd_configs", []):
                sd["refresh_interval"] = "1s"
        (self.config_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(["python", str(PROMETHEUS_DIR / "render_rules.py"), "--live-test",
                        str(self.config_dir / "rules" / "kpi-alerts.yml"), "--for", "5s"], check=True, cwd=REPO)
        self.data_dir = workdir / "prometheus-data"
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "LocalPrometheus":
        promtool = shutil.which("promtool")
        assert promtool, "promtool missing (scripts/setup.sh installs Debian's prometheus package)"
        subprocess.run([promtool, "check", "config", str(self.config_dir / "prometheus.yml")],
                       check=True, capture_output=True)
        self.process = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus",
             f"--config.file={self.config_dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self._ready() or ["not ready", self.log_tail()], timeout=60, what="prometheus ready")
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400/422 carry a JSON error body
            return json.loads(error.read())

    def query(self, expr: str) -> list[dict]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def firing(self, alert: str) -> list[dict]:
        alerts = self.api("alerts")["data"]["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


OVERVIEW = REPO / "deploy" / "grafana" / "dashboards" / "kpi-overview.json"
OURS = f"{FALLING}|{STEADY}|{RECEIVING}"  # what a user selects in $territory


CHANGE_PANEL = "Active accounts: change against 7d ago by territory ($window window)"
RELATIVE_PANEL = "Active accounts: relative change against 7d ago by territory"
FASTEST_PANEL = "The 10 territories falling fastest ($window window, against 7d ago)"


def _falling_panel_queries(offset_seconds: int) -> tuple[dict[tuple[str, str], str], str]:
    """The "where is it falling" row's queries by (panel title, refId), and the annotation query,
    as committed, expanded for window 30d and this test's territories, with `offset 7d` ->
    `offset {offset_seconds}s`."""
    overview = json.loads(OVERVIEW.read_text())
    variables = {"window": ["30d"], "territory": [OURS]}

    def expanded(expr: str) -> str:
        (one,), unknown = dc.expand(expr, variables)
        assert unknown == [], expr
        return one.replace("offset 7d", f"offset {offset_seconds}s")

    panels = {(panel["title"], t["refId"]): expanded(t["expr"]) for panel in dc.iter_panels(overview)
              for t in panel.get("targets", []) if "offset 7d" in t["expr"]}
    (annotation,) = [a["expr"] for a in overview["annotations"]["list"] if "ALERTS" in a.get("expr", "")]
    return panels, expanded(annotation)


def _by_scope_id(result: list[dict]) -> dict[str, float]:
    return {s["metric"]["scope_id"]: round(float(s["value"][1]), 6) for s in result}


REPS = REPO / "deploy" / "grafana" / "dashboards" / "reps.json"

# -- "Targets: month to date" (KPI overview) and rep attainment (Reps) -------------------------------
#
# Each panel's query (title, refId) -> the oracle's values it must return, by the column of
# `target_columns` it is; "active" is active accounts' attainment, "global mtd"/"global lmtd" the
# KPI's global values.
TARGET_ROW_PANELS = {
    ("Attainment MTD by territory: $target", "A"): "attainment",
    ("Projected month-end attainment by territory: $target", "A"): "projected_attainment",
    ("Active accounts: attainment MTD by territory", "A"): "active",
    **{("Targets by territory: $target, month to date against target and last month", ref): column
       for ref, column in zip("ABCDEFG", ("target", "mtd", "attainment", "projected", "projected_attainment",
                                          "lmtd", "growth"))},
    ("$target: month to date against last month to date (all territories)", "A"): "global mtd",
    ("$target: month to date against last month to date (all territories)", "B"): "global lmtd",
    ("$target: MTD against LMTD by territory", "A"): "growth",
}
REP_TARGET_PANELS = {
    ("Projected month-end sales attainment by rep", "A"): ("sales_amount", "projected_attainment"),
    **{("Rep attainment, month to date (sales and orders)", ref): (kpi, column)
       for ref, (kpi, column) in zip("ABCDEFGH", [(k, c) for k in ("sales_amount", "orders")
                                                  for c in ("target", "mtd", "attainment", "projected_attainment")])},
}


# -- "Field execution" (KPI overview) -----------------------------------------------------------------
#
# Each panel's query (title, refId) -> (the KPI it shows, "territory" or "global"), for $window = 30d
# and $territory = All; registered_outlets has no window.
_TERRITORY_TABLE = "Field execution by territory ($window window)"
FIELD_ROW_PANELS = {
    ("Call compliance", "A"): ("call_compliance", "global"),
    ("Coverage", "A"): ("coverage", "global"),
    ("Time in market (minutes per visit)", "A"): ("avg_visit_minutes", "global"),
    ("Net sales", "A"): ("net_sales_amount", "global"),
    ("Call compliance by territory", "A"): ("call_compliance", "territory"),
    ("Coverage by territory", "A"): ("coverage", "territory"),
    ("Time in market by territory (minutes per visit)", "A"): ("avg_visit_minutes", "territory"),
    **{(_TERRITORY_TABLE, ref): (kpi, "territory") for ref, kpi in zip("ABCDEFGHIJK", (
        "planned_calls", "calls_on_plan", "call_compliance", "unplanned_visits", "registered_outlets", "coverage",
        "active_rate", "avg_visit_minutes", "sales_amount", "returned_amount", "net_sales_amount"))},
    ("Call compliance and coverage", "A"): ("call_compliance", "global"),
    ("Call compliance and coverage", "B"): ("coverage", "global"),
    ("Call compliance and coverage", "C"): ("active_rate", "global"),
    ("Net sales against returns", "A"): ("sales_amount", "global"),
    ("Net sales against returns", "B"): ("returned_amount", "global"),
    ("Net sales against returns", "C"): ("net_sales_amount", "global"),
    ("Call compliance by territory over time", "A"): ("call_compliance", "territory"),
    ("Time in market over time (minutes per visit)", "A"): ("avg_visit_minutes", "global"),
    ("Time in market over time (minutes per visit)", "B"): ("avg_visit_minutes", "territory"),
}


def _expected_field_panels(expected: dict[str, dict], window: str = "30d") -> dict[tuple[str, str], dict[str, float]]:
    """What each query of the Field execution row returns for `$window` = `window`, `$territory` =
    All: the oracle's values (`-` for the global one), a null ratio (no denominator) and a 0 left
    out -- a key at 0 equals no key (tests/kpi_compare.py)."""
    def values(kpi: str, scope: str) -> dict[str, float]:
        win = "-" if kpi == "registered_outlets" else window
        out = {}
        for key, record in expected.items():
            parts = key.split("|")
            if parts[:3] == [kpi, win, scope] and record.get("value") not in (None, 0):
                out["-" if scope == "global" else parts[3]] = round(float(record["value"]), 6)
        return out

    return {key: values(kpi, scope) for key, (kpi, scope) in FIELD_ROW_PANELS.items()}


def _nonzero(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v != 0 and not math.isnan(v)}


def _panel_queries(path: Path, titles: set[str], variables: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """The committed queries of the panels titled `titles`, by (title, refId), with `variables`."""
    out = {}
    for panel in dc.iter_panels(json.loads(path.read_text())):
        if panel["title"] in titles:
            for t in panel["targets"]:
                (one,), unknown = dc.expand(t["expr"], variables)
                assert unknown == [], t["expr"]
                out[(panel["title"], t["refId"])] = one
    return out


def target_columns(expected: dict[str, dict], kpi: str, scope: str) -> dict[str, dict[str, float]]:
    """From the oracle's values: per scope_id of `scope`, the month's target of `kpi` (window mtd)
    and what it is measured against, each for the scopes with a target, as the dashboards show them."""
    def values(name: str, window: str) -> dict[str, float]:
        out = {}
        for key, record in expected.items():
            parts = key.split("|")
            if parts[:3] == [name, window, scope] and len(parts) == 4 and record.get("value") is not None:
                out[parts[3]] = float(record["value"])
        return out

    target, mtd, lmtd = values(f"{kpi}_target", "mtd"), values(kpi, "mtd"), values(kpi, "lmtd")
    return {
        "target": target,
        "mtd": {s: v for s, v in mtd.items() if s in target},
        "attainment": values(f"{kpi}_attainment", "mtd"),
        "projected": values(f"{kpi}_projected", "mtd"),
        "projected_attainment": values(f"{kpi}_projected_attainment", "mtd"),
        "lmtd": {s: v for s, v in lmtd.items() if s in target},
        "growth": {s: mtd[s] / lmtd[s] - 1 for s in mtd if s in target and lmtd.get(s, 0) > 0},
    }


def _values(result: list[dict]) -> dict[str, float]:
    """scope_id -> value of an instant query's result (`-`: a series without scope_id)."""
    return {s["metric"].get("scope_id", "-"): round(float(s["value"][1]), 6) for s in result}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in values.items()}


def _expected_target_panels(expected: dict[str, dict], target: str) -> dict[tuple[str, str], dict[str, float]]:
    """What each query of the Targets row returns for `$target` = `target`, `$territory` = All."""
    columns = target_columns(expected, target, "territory")
    columns["active"] = target_columns(expected, "active_accounts", "territory")["attainment"]
    for window in ("mtd", "lmtd"):
        columns[f"global {window}"] = {"-": float(expected[f"{target}|{window}|global|all"]["value"])}
    return {key: _rounded(columns[column]) for key, column in TARGET_ROW_PANELS.items()}


def _expected_rep_panels(expected: dict[str, dict], reps: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    """What each query of Reps' target panels returns for `$rep` = `reps`."""
    by_rep = {kpi: target_columns(expected, kpi, "rep") for kpi in ("sales_amount", "orders")}
    return {key: _rounded({r: v for r, v in by_rep[kpi][column].items() if r in reps})
            for key, (kpi, column) in REP_TARGET_PANELS.items()}


def _expected_projection_alerts(expected: dict[str, dict], day_of_month: int) -> list[tuple[str, str, str]]:
    """(kpi, scope, scope_id) ProjectedAttainmentBelowTarget fires for: month targets projected
    below 90 %, every exported scope type but rep, from the 4th of the month (its day in
    Asia/Jakarta at the time of the check: the alert reads Prometheus's clock, not the worker's)."""
    if day_of_month <= 3:
        return []
    out = []
    for key, record in expected.items():
        parts = key.split("|")
        if (parts[0].endswith("_projected_attainment") and parts[1] == "mtd" and parts[2] in ("global", "region", "territory")
                and record.get("value") is not None and record["value"] < 0.90):
            out.append((parts[0].removesuffix("_projected_attainment"), parts[2], parts[3]))
    return sorted(out)


def _rep_variable(prometheus: LocalPrometheus, territories: str, start: float, end: float) -> list[str]:
    """The Reps dashboard's `$rep` for `$territory` = `territories`, as Grafana asks Prometheus:
    `label_values(SELECTOR, rep)` is the label values API with SELECTOR as match[] over the
    dashboard's time range."""
    (rep,) = [v for v in json.loads(REPS.read_text())["templating"]["list"] if v["name"] == "rep"]
    match = dc._LABEL_VALUES.match(rep["query"]["query"])
    (selector,), unknown = dc.expand(match.group(1), {"territory": [territories]})
    assert unknown == [] and match.group(2) == "rep", rep["query"]
    answer = prometheus.api(f"label/{match.group(2)}/values", **{"match[]": selector},
                            start=f"{start:.3f}", end=f"{end:.3f}")
    assert answer["status"] == "success", answer
    return sorted(answer["data"])


def _territory_rep_sums(prometheus: LocalPrometheus) -> dict[tuple[str, str], float]:
    result = prometheus.query('sum by (territory, rep) (kpi_stream_rep_territory_outlets{job="kpi-stream"})')
    return {(s["metric"]["territory"], s["metric"]["rep"]): float(s["value"][1]) for s in result}


def _reps_in(assignments: dict[tuple[str, str], int], *territories: str) -> list[str]:
    return sorted({rep for (territory, rep), outlets in assignments.items() if territory in territories and outlets})


def _territory_gauge(prometheus: LocalPrometheus, territory: str) -> float | None:
    result = prometheus.query(
        f'kpi_active_accounts{{job="kpi-stream",scope="territory",scope_id="{territory}",window="30d"}}')
    return float(result[0]["value"][1]) if result else None


def _expected_active(events: list[bytes], as_of: str, territory: str) -> float:
    expected = oracle_kpis(events, as_of, OracleSettings())
    return expected.get(f"active_accounts|30d|territory|{territory}", {"value": 0})["value"]


def test_prometheus_ingests_kpis_and_alerts_on_falling_active_accounts(kafka_broker, redis_server, tmp_path):
    config = generator.GeneratorConfig(seed=5, events=4000)
    background = list(generator.generate(config))  # a rich exposition: every KPI family, dead letters
    as_of_us = generator.now_us(config)
    as_of = format_rfc3339_us(as_of_us)
    before, moves = _territory_traffic(as_of_us)
    events_before = [m.value for m in background] + [value for _, _, value in before]
    events_after = events_before + [value for _, _, value in moves]
    expected_before = {t: _expected_active(events_before, as_of, t) for t in (FALLING, STEADY)}
    expected_after = {t: _expected_active(events_after, as_of, t) for t in (FALLING, STEADY, RECEIVING)}
    assert expected_before[FALLING] >= 20 and expected_after[FALLING] < 0.95 * expected_before[FALLING]
    assert expected_after[STEADY] == expected_before[STEADY]

    # designated periods (`2026-11`) go to the topic, Redis and /kpi only, never to gauges (spec 8)
    expected_rep_series = {key: {"value": record["value"]}
                           for key, record in oracle_kpis(events_before, as_of, OracleSettings()).items()
                           if key.split("|")[2] == "rep" and record.get("value") is not None
                           and not is_designator(key.split("|")[1])}
    assigned_before = territory_rep_outlets(events_before, as_of)
    assigned_after = territory_rep_outlets(events_after, as_of)
    assert _reps_in(assigned_before, FALLING) == ["R-FALL-1", "R-FALL-2", "R-FALL-3"]
    assert _reps_in(assigned_after, FALLING) == ["R-FALL-3"]
    assert _reps_in(assigned_after, RECEIVING) == ["R-FALL-1", "R-FALL-2"]
    assert _reps_in(assigned_before, STEADY) == _reps_in(assigned_after, STEADY) == ["R-FALL-3", "R-STEADY"]

    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=as_of,
                     KPI_EXPORT_SCOPES="global,region,territory,rep")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    prometheus = None
    try:
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")
        prometheus = LocalPrometheus(tmp_path, f"127.0.0.1:{worker.web_port}").start()
        asyncio.run(produce(kafka_broker.bootstrap, [(prefix + m.topic, m.key, m.value) for m in background]
                            + [(prefix + topic, key, value) for topic, key, value in before]))

        def ingested_before():
            got = {t: _territory_gauge(prometheus, t) for t in (FALLING, STEADY)}
            return got == expected_before or [got, expected_before]

        wait_until(ingested_before, timeout=120, interval=1, what="Prometheus to hold the oracle's active accounts")
        started = time.time() - 600  # the Reps dashboard's time range starts before the worker did

        def assignments_before():
            got = _territory_rep_sums(prometheus)
            return got == assigned_before or [sorted(set(got.items()) ^ set(assigned_before.items()))]

        wait_until(assignments_before, timeout=30, interval=1,
                   what="Prometheus to hold the oracle's outlets per territory and rep")
        for territories in (FALLING, STEADY, f"{FALLING}|{STEADY}"):
            assert _rep_variable(prometheus, territories, started, time.time()) == \
                _reps_in(assigned_before, *territories.split("|")), territories
        # From here until the move (3 s and more later) every new sample holds the "before" levels.
        seen_before = time.time()
        up = prometheus.query('up{job="kpi-stream"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        # none of ours fires before the move (the generator's `unassigned` region may: while the
        # worker catches up, orders can be applied before their outlet's onboarding, another topic)
        assert [a for a in prometheus.firing("ActiveAccountsSharpFall") if a["scope_id"] in (FALLING, STEADY)] == []

        # Dashboards, against this worker's live exposition and this Prometheus's query engine.
        status, metrics_text = worker.get("/metrics")
        assert status == 200
        problems = dc.check_dashboard_queries(DASHBOARDS, metrics_text.decode())
        assert problems == [], "\n".join(problems)
        # a scrape (or the benchmark's poll) may ask for some families only
        status, some = worker.get("/metrics?name[]=kpi_stream_events_consumed_total&name[]=kpi_stream_consumer_lag")
        assert status == 200
        families = {f.name for f in text_string_to_metric_families(some.decode())}
        assert families == {"kpi_stream_events_consumed", "kpi_stream_consumer_lag"}, families
        # Rep-level series (docs/operations.md, "Rep-level gauges"): one per rep and value the oracle has.
        # (compared as every output is, tests/kpi_compare.py: a key at 0 equals no key)
        def rep_series():
            gauges = gauge_values(worker.get("/metrics")[1].decode())
            return kpi_differences({k: v for k, v in gauges.items() if k.split("|")[2] == "rep"}, expected_rep_series)

        wait_until(rep_series, timeout=30, interval=1, what="the oracle's rep series on /metrics")
        rejected = []
        for dashboard in dc.load_dashboards(DASHBOARDS):
            variables = dc._variable_values(dashboard)
            for where, expr, _legend in dc.iter_queries(dashboard):
                for expanded in dc.expand(expr, variables)[0]:
                    answer = prometheus.api("query", query=expanded)
                    if answer["status"] != "success":
                        rejected.append((where, expanded, answer.get("error")))
        assert rejected == []

        time.sleep(3)  # a few samples at the peak, so the 3h maximum is the "before" value
        asyncio.run(produce(kafka_broker.bootstrap, [(prefix + topic, key, value) for topic, key, value in moves]))

        def ingested_after():
            got = {t: _territory_gauge(prometheus, t) for t in (FALLING, STEADY, RECEIVING)}
            return got == expected_after or [got, expected_after]

        wait_until(ingested_after, timeout=60, interval=1, what="Prometheus to hold the fallen active accounts")
        seen_after = time.time()  # the latest samples before this instant hold the "after" levels

        # Outlets per territory and rep after the move: the twenty went to RECEIVING with their reps.
        def assignments_after():
            got = _territory_rep_sums(prometheus)
            return got == assigned_after or [sorted(set(got.items()) ^ set(assigned_after.items()))]

        wait_until(assignments_after, timeout=30, interval=1,
                   what="Prometheus to hold the oracle's outlets per territory and rep after the move")
        # $rep for a territory over a range since the move (holding a few scrapes: the label values
        # API lists the series with samples in the range): exactly the oracle's reps there now.
        time.sleep(2)
        for territory in (RECEIVING, STEADY):
            assert _rep_variable(prometheus, territory, seen_after, time.time()) == \
                _reps_in(assigned_after, territory), territory
        # Over a range from before the move (the dashboard's, for a fall): FALLING's reps now, and
        # those whose outlets left it then -- the label values API lists every series of the range.
        assert _rep_variable(prometheus, FALLING, started, time.time()) == \
            sorted(set(_reps_in(assigned_after, FALLING)) | set(_reps_in(assigned_before, FALLING)))

        # "Targets: month to date": each panel of the row, for each $target and $territory = All, and
        # the Reps dashboard's rep attainment for $rep = All (the reps it lists), return the oracle's
        # values; the moves changed no territory with a target (ours have none).
        oracle_after = oracle_kpis(events_after, as_of, OracleSettings())
        all_reps = _rep_variable(prometheus, ".*", started, time.time())
        assert len(all_reps) > 10
        titles = {title for title, _ in TARGET_ROW_PANELS}
        for target in ("sales_amount", "orders", "visits"):
            overview_queries = _panel_queries(OVERVIEW, titles, {"target": [target], "territory": [".*"]})
            expected_overview = _expected_target_panels(oracle_after, target)
            assert sorted(overview_queries) == sorted(expected_overview)
            assert len(expected_overview[("Attainment MTD by territory: $target", "A")]) >= 20, target
            assert expected_overview[("$target: MTD against LMTD by territory", "A")], target

            def target_panels():
                got = {key: _values(prometheus.query(expr)) for key, expr in overview_queries.items()}
                return got == expected_overview or [{k: (got[k], expected_overview[k]) for k in got
                                                     if got[k] != expected_overview[k]}]

            wait_until(target_panels, timeout=30, interval=1, what=f"the Targets row ({target}) to equal the oracle")
        rep_queries = _panel_queries(REPS, {title for title, _ in REP_TARGET_PANELS},
                                     {"rep": ["|".join(all_reps)], "territory": [".*"]})
        expected_reps = _expected_rep_panels(oracle_after, all_reps)
        assert sorted(rep_queries) == sorted(expected_reps)
        assert len(expected_reps[("Rep attainment, month to date (sales and orders)", "A")]) > 10
        got_reps = {key: _values(prometheus.query(expr)) for key, expr in rep_queries.items()}
        assert got_reps == expected_reps

        # "Field execution": every query of the row, for $window = 30d and $territory = All, returns the
        # oracle's call compliance, coverage, time in market, sales, returns and net sales.
        field_queries = _panel_queries(OVERVIEW, {title for title, _ in FIELD_ROW_PANELS},
                                       {"window": ["30d"], "territory": [".*"]})
        expected_field = _expected_field_panels(oracle_after)
        assert sorted(field_queries) == sorted(expected_field)
        assert len(expected_field[(_TERRITORY_TABLE, "C")]) >= 10  # territories with planned calls
        assert expected_field[("Net sales against returns", "B")], "the generator's world has returns"

        def field_panels():
            got = {key: _nonzero(_values(prometheus.query(expr))) for key, expr in field_queries.items()}
            return got == expected_field or [{k: (got[k], expected_field[k]) for k in got
                                              if got[k] != expected_field[k]}]

        wait_until(field_panels, timeout=30, interval=1, what="the Field execution row to equal the oracle")

        # ProjectedAttainmentBelowTarget (its `for:` shortened to 5s) fires for exactly the month
        # targets the oracle projects below 90 % -- after day 3 of the month by Prometheus's clock.
        def projection_alerts():
            fired = sorted((a["kpi"], a["scope"], a["scope_id"]) for a in prometheus.firing("ProjectedAttainmentBelowTarget"))
            day = datetime.now(ZoneInfo("Asia/Jakarta")).day
            want = _expected_projection_alerts(oracle_after, day)
            return fired == want or [day, sorted(set(fired) ^ set(want))]

        below = _expected_projection_alerts(oracle_after, 4)
        assert ("orders", "territory", FALLING) in below and ("sales_amount", "territory", STEADY) not in below
        assert oracle_after[f"sales_amount_projected_attainment|mtd|territory|{STEADY}"]["value"] > 1.1
        wait_until(projection_alerts, timeout=150, interval=2,
                   what="ProjectedAttainmentBelowTarget firing for the oracle's targets projected below 90 %")

        # "Active accounts: where is it falling", evaluated at seen_after against an instant 1-2 s
        # after seen_before: a scrape (every 1 s) after the one that showed the "before" levels, and
        # before the move was even sent.
        offset = math.floor(seen_after - seen_before - 1)
        assert offset >= 1
        panels, annotation = _falling_panel_queries(offset)
        then = {t: expected_before[t] for t in (FALLING, STEADY)}  # RECEIVING had no series then
        change = {t: float(expected_after[t] - then[t]) for t in then}
        relative = {t: round(expected_after[t] / then[t] - 1, 6) for t in then}
        falls = sorted((t for t in change if change[t] < 0), key=change.get)[:10]
        assert falls == [FALLING]
        expected_panels = {
            (CHANGE_PANEL, "A"): change,
            (RELATIVE_PANEL, "A"): relative,
            (FASTEST_PANEL, "A"): {t: change[t] for t in falls},
            (FASTEST_PANEL, "B"): {t: relative[t] for t in falls},
            (FASTEST_PANEL, "C"): {t: float(expected_after[t]) for t in falls},
        }
        assert sorted(panels) == sorted(expected_panels)
        got_panels = {}
        for key, expr in panels.items():
            answer = prometheus.api("query", query=expr, time=f"{seen_after:.3f}")
            assert answer["status"] == "success", (key, expr, answer)
            got_panels[key] = _by_scope_id(answer["data"]["result"])
        assert got_panels == expected_panels

        def sharp_fall_fires_for_falling_territory():
            # The generator's own territories may legitimately fall too (its outlets move);
            # of ours, only the one that lost outlets may fire.
            fired = prometheus.firing("ActiveAccountsSharpFall")
            ours = sorted(labels["scope_id"] for labels in fired if labels["scope_id"] in (FALLING, STEADY, RECEIVING))
            return ours == [FALLING] or [ours, fired]

        wait_until(sharp_fall_fires_for_falling_territory, timeout=60, interval=1,
                   what="ActiveAccountsSharpFall firing for the falling territory, not the steady one")

        # The annotation query, as Grafana runs it: a range query over the dashboard's time range. The
        # rule's state (the alerts API) can be a moment ahead of its ALERTS sample in storage.
        def annotation_marks_the_fall():
            answer = prometheus.api("query_range", query=annotation, start=f"{seen_before - 60:.3f}",
                                    end=f"{time.time():.3f}", step="1")
            assert answer["status"] == "success", answer
            ours = [s for s in answer["data"]["result"] if s["metric"].get("scope_id") in (FALLING, STEADY, RECEIVING)]
            marked = sorted((s["metric"]["alertname"], s["metric"]["alertstate"], s["metric"]["scope_id"]) for s in ours)
            # it fired after the move, never before it
            after_move = all(float(t) > seen_before for s in ours for t, _ in s["values"])
            return (marked == [("ActiveAccountsSharpFall", "firing", FALLING)] and after_move) or [marked, ours]

        wait_until(annotation_marks_the_fall, timeout=30, interval=1,
                   what="the annotation query to show ActiveAccountsSharpFall firing for the falling territory")
        assert worker.alive(), worker.log_tail()
    finally:
        if prometheus is not None:
            prometheus.stop()
        worker.stop()

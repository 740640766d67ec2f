"""Grafana dashboards: valid dashboard JSON, in step with their builder, and every query asks for
metrics and labels the worker really exports.

The exposition text comes from the fixture `live_metrics_text` when one is defined (a conftest
can serve a running worker's /metrics there); otherwise from `dashboards_check.default_metrics_text()`, built
from stream/worker/metrics.py's registry and the real KPI gauges (stream/worker/sinks.py) with a few samples
per label combination the worker produces with the default settings.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy import dashboards_check as dc

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))

# The KPI gauges of spec section 3 (names are public; see stream/worker/metrics.py).
KPI_GAUGES = (
    "kpi_active_accounts", "kpi_dormant_accounts", "kpi_reactivated_accounts", "kpi_first_order_conversion",
    "kpi_orders", "kpi_sales_amount", "kpi_average_order_value", "kpi_lines_per_order",
    "kpi_visits", "kpi_productive_visits", "kpi_visit_to_order_ratio",
    "kpi_new_leads", "kpi_open_leads", "kpi_avg_open_lead_age_days", "kpi_win_rate", "kpi_avg_deal_size",
    "kpi_avg_sales_cycle_days", "kpi_pipeline_velocity", "kpi_activities",
)
PROCESSOR_SERIES = (
    "kpi_stream_events_consumed_total", "kpi_stream_deadletters_total", "kpi_stream_ignored_events_total",
    "kpi_stream_late_corrections_total", "kpi_stream_consumer_lag", "kpi_stream_partition_stalled_seconds",
    "kpi_stream_publish_latency_seconds_bucket",
    "kpi_stream_state_entities", "kpi_stream_last_publish_timestamp_seconds",
    "kpi_stream_kpi_updates_published_total", "kpi_stream_redis_up", "kpi_stream_ready",
)


def _load_builder():
    name = "kpi_stream_build_dashboards"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, GRAFANA / "build_dashboards.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses need their module registered
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def metrics_text(request) -> str:
    try:
        return request.getfixturevalue("live_metrics_text")
    except pytest.FixtureLookupError:
        return dc.default_metrics_text()


@pytest.fixture
def exported_series(metrics_text) -> dict[str, set[str]]:
    """Metric name -> label names of what the worker exports."""
    return dc.exported_series(metrics_text)


@pytest.fixture(scope="module")
def dashboards() -> list[dict]:
    assert DASHBOARD_FILES, "no dashboards in deploy/grafana/dashboards"
    return dc.load_dashboards(DASHBOARD_FILES)


def _provisioned_datasource_uids() -> set[str]:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    return {ds["uid"] for ds in config["datasources"]}


# -- the JSON files ----------------------------------------------------------------------------------


def test_committed_json_is_what_the_builder_writes():
    rendered = _load_builder().render()
    assert sorted(rendered) == [p.name for p in DASHBOARD_FILES]
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == text, (
            f"{name} is out of date: run python deploy/grafana/build_dashboards.py")


def test_dashboards_are_valid_dashboard_json(dashboards):
    uids = _provisioned_datasource_uids()
    problems = [p for d in dashboards for p in dc.check_dashboard_structure(d, uids)]
    assert problems == []
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert {d["title"] for d in dashboards} == {"KPI overview", "Processor health", "Reps"}


def test_provisioning_points_at_prometheus_and_the_dashboards_directory():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["url"]) for d in ds] == [("prometheus", "http://prometheus:9090")]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "provider.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_kpi_overview_has_a_window_variable_and_shows_every_kpi(dashboards):
    overview = next(d for d in dashboards if d["title"] == "KPI overview")
    window = next(v for v in overview["templating"]["list"] if v["name"] == "window")
    assert [o["value"] for o in window["options"]] == ["7d", "30d", "60d"]
    selected = dc.selected_metrics(overview)
    assert set(KPI_GAUGES) <= selected, f"KPIs without a panel: {sorted(set(KPI_GAUGES) - selected)}"


def test_processor_health_shows_every_processor_metric(dashboards):
    health = next(d for d in dashboards if d["title"] == "Processor health")
    selected = dc.selected_metrics(health)
    assert set(PROCESSOR_SERIES) | {"up"} <= selected, f"missing: {sorted(set(PROCESSOR_SERIES) - selected)}"


# -- queries against the exported series ---------------------------------------------------------------


def test_exposition_has_every_kpi_gauge_and_processor_metric(exported_series):
    missing = [name for name in KPI_GAUGES + PROCESSOR_SERIES if name not in exported_series]
    assert missing == []
    assert {"window", "scope", "scope_id"} <= exported_series["kpi_active_accounts"]
    assert "horizon" in exported_series["kpi_first_order_conversion"]
    assert "kind" in exported_series["kpi_activities"]


def test_every_dashboard_query_matches_exported_series(dashboards, metrics_text):
    """KPI overview and Processor health against a worker with default settings; Reps against
    one whose KPI_EXPORT_SCOPES includes rep (it shows nothing otherwise, see below)."""
    reps = [d for d in dashboards if d["uid"] == "kpi-stream-reps"]
    others = [d for d in dashboards if d["uid"] != "kpi-stream-reps"]
    assert dc.check_dashboard_queries(others, metrics_text) == []
    with_reps = dc.default_metrics_text(dc.DEFAULT_EXPORT_SCOPES + ("rep",))
    assert dc.check_dashboard_queries(reps, with_reps) == []


def test_reps_dashboard_needs_the_rep_scope_exported(dashboards):
    reps = next(d for d in dashboards if d["title"] == "Reps")
    problems = dc.check_dashboard_queries([reps], dc.default_metrics_text())
    assert problems and all('scope="rep"' in p or "scope='rep'" in p or "'kpi_stream_rep_territory_outlets' is not "
                            "exported" in p for p in problems), problems
    assert any("variable $rep" in p for p in problems), "the rep list comes with the rep scope, too"
    assert "KPI_EXPORT_SCOPES" in reps["description"]


def test_reps_lists_the_reps_of_the_selected_territories(dashboards):
    """$rep follows $territory through kpi_stream_rep_territory_outlets, and its "All" is the reps
    listed (no allValue: `.*` would select every rep, the territory's or not)."""
    reps = next(d for d in dashboards if d["title"] == "Reps")
    variables = {v["name"]: v for v in reps["templating"]["list"]}
    assert list(variables) == ["window", "territory", "rep"], "a variable's query may use only those before it"
    assert variables["territory"]["query"]["query"] == "label_values(kpi_stream_rep_territory_outlets, territory)"
    assert variables["rep"]["query"]["query"] == variables["rep"]["definition"] == \
        'label_values(kpi_stream_rep_territory_outlets{territory=~"$territory"}, rep)'
    assert variables["territory"]["allValue"] == ".*" and "allValue" not in variables["rep"]
    assert variables["rep"]["includeAll"] and variables["rep"]["multi"]
    outlets = _panel(reps, "Outlets by rep in $territory")
    assert [t["expr"] for t in outlets["targets"]] == [
        'sum by (rep) (kpi_stream_rep_territory_outlets{territory=~"$territory", rep=~"$rep"})']
    with_reps = dc.default_metrics_text(dc.DEFAULT_EXPORT_SCOPES + ("rep",))
    series = dc.parse_exposition(with_reps).samples["kpi_stream_rep_territory_outlets"]
    assert sorted((s["territory"], s["rep"]) for s in series) == [("JKT-01", "r1"), ("JKT-01", "r2"), ("SBY-02", "r2")]


# -- "Active accounts: where is it falling" --------------------------------------------------------------


def _panel(dashboard: dict, title_start: str) -> dict:
    return next(p for p in dc.iter_panels(dashboard) if p["title"].startswith(title_start))


def test_overview_leads_with_where_active_accounts_fall(dashboards):
    overview = next(d for d in dashboards if d["title"] == "KPI overview")
    assert overview["panels"][0]["type"] == "row"
    assert overview["panels"][0]["title"] == "Active accounts: where is it falling"
    change = _panel(overview, "Active accounts: change against 7d ago by territory")
    assert [t["expr"].count("offset 7d") for t in change["targets"]] == [1]
    fastest = _panel(overview, "The 10 territories falling fastest")
    assert fastest["type"] == "table"
    assert [t["instant"] and t["format"] == "table" for t in fastest["targets"]] == [True, True, True]
    assert fastest["targets"][0]["expr"].startswith("bottomk(10, ")
    links = [(o["matcher"]["options"], link["url"]) for o in fastest["fieldConfig"]["overrides"]
             for prop in o["properties"] if prop["id"] == "links" for link in prop["value"]]
    # the territory column links to Reps for the territory in the cell, same window and time range
    assert links == [("territory", "/d/kpi-stream-reps/reps?var-window=${window}&var-territory=${__value.raw}"
                                   "&${__url_time_range}")]
    for title in ("Active accounts: change against 7d ago by territory", "Active accounts: relative change"):
        series_links = [link["url"] for link in _panel(overview, title)["fieldConfig"]["defaults"]["links"]]
        assert series_links == ["/d/kpi-stream-reps/reps?var-window=${window}&var-territory="
                                "${__field.labels.scope_id}&${__url_time_range}"], title
    alerts = [a for a in overview["annotations"]["list"] if a.get("datasource", {}).get("type") == "prometheus"]
    assert [a["expr"] for a in alerts] == ['ALERTS{alertname=~"ActiveAccounts.*", alertstate="firing"}']


def test_active_change_differs_only_in_its_offset():
    """The live test evaluates the committed 7d queries with a short offset written in their place."""
    builder = _load_builder()
    week, short = builder.active_change("territory", "$territory"), builder.active_change("territory", "$territory",
                                                                                          offset="17s")
    assert {k: v.replace("offset 7d", "offset 17s") for k, v in week.items()} == short


def test_checker_reads_annotation_queries():
    dashboard = _panel_dashboard(('kpi_stream_ready', ""))
    dashboard["annotations"] = {"list": [{"name": "a", "datasource": {"type": "prometheus", "uid": "prometheus"},
                                          "expr": 'ALERTS{alertname="X", regoin="north"}', "titleFormat": "{{alertname}}"}]}
    problems = dc.check_dashboard_queries([dashboard], dc.default_metrics_text())
    assert any("annotation 'a'" in p and "'regoin'" in p for p in problems), problems


def test_dashboard_queries_parse_with_promtool(dashboards):
    promtool = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    assert promtool, "promtool not found: install Debian's `prometheus` package (scripts/setup.sh does)"
    exprs = []
    for dashboard in dashboards:
        variables = dc._variable_values(dashboard)
        for where, expr, _legend in dc.iter_queries(dashboard):
            expansions, unknown = dc.expand(expr, variables)
            assert unknown == [], where
            exprs += [(where, e) for e in expansions]
    assert dc.promql_syntax_problems(exprs, promtool) == []


# -- the checker itself finds mistakes --------------------------------------------------------------------


def _panel_dashboard(*exprs: tuple[str, str], variables: list[dict] | None = None) -> dict:
    builder = _load_builder()
    return {
        "uid": "t", "title": "t", "schemaVersion": 39, "templating": {"list": variables or []},
        "panels": [builder.timeseries(f"p{i}", [(expr, legend)]) | {"id": i + 1, "gridPos": {"h": 1, "w": 1, "x": 0, "y": i}}
                   for i, (expr, legend) in enumerate(exprs)],
    }


@pytest.mark.parametrize("expr, legend, expected", [
    ('max(kpi_active_acounts{scope="global"})', "", "metric 'kpi_active_acounts' is not exported"),
    ('max(kpi_active_accounts{region="north"})', "", "has no label 'region'"),
    ('max(kpi_open_leads{scope="global", window="30d"})', "", "matches no exported series"),
    ('max(kpi_activities{scope="region", window="7d"})', "", "matches no exported series"),
    ('max(kpi_active_accounts{scope="rep", window="30d"})', "", "matches no exported series"),
    ('sum by (topic) (kpi_stream_deadletters_total)', "", "grouping label 'topic'"),
    ('sum by (reason) (rate(kpi_stream_deadletters_total[5m]))', "{{topic}}", "legend uses {{topic}}"),
    ('max(kpi_active_accounts{window="$windw"})', "", "unknown variable $windw"),
    ('kpi_stream_publish_latency_seconds{le="1.0"}', "", "not exported"),
])
def test_checker_reports_mistakes(expr, legend, expected):
    problems = dc.check_dashboard_queries([_panel_dashboard((expr, legend))], dc.default_metrics_text())
    assert any(expected in p for p in problems), problems


def test_checker_expands_custom_variables_to_each_option():
    window = _load_builder().custom_variable("window", "Window", ("7d", "30d", "90d"), "30d", "")
    dashboard = _panel_dashboard(('max(kpi_active_accounts{scope="global", window="$window"})', ""),
                                 variables=[window])
    problems = dc.check_dashboard_queries([dashboard], dc.default_metrics_text())
    assert len(problems) == 1 and "'90d'" in problems[0], problems


def test_checker_accepts_target_labels_and_histogram_buckets():
    dashboard = _panel_dashboard(
        ('up{job="kpi-stream", instance=~".*"}', "{{instance}}"),
        ('histogram_quantile(0.9, sum by (le) (rate(kpi_stream_publish_latency_seconds_bucket[5m])))', "p90"),
        ('kpi_stream_consumer_lag{instance="w1", topic="sales.orders"} offset 5m', "{{topic}}[{{partition}}]"),
    )
    assert dc.check_dashboard_queries([dashboard], dc.default_metrics_text()) == []


def test_structure_check_reports_a_panel_without_datasource():
    dashboard = _panel_dashboard(('kpi_stream_ready', ""))
    del dashboard["panels"][0]["datasource"]
    assert any("datasource" in p for p in dc.check_dashboard_structure(dashboard))


def test_exported_series_reads_a_plain_exposition():
    text = (
        "# HELP kpi_orders KPI orders\n# TYPE kpi_orders gauge\n"
        'kpi_orders{window="7d",scope="global",scope_id="all"} 3.0\n'
        "# HELP kpi_stream_deadletters_total x\n# TYPE kpi_stream_deadletters_total counter\n"
        'kpi_stream_deadletters_total{reason="bad_value"} 1.0\n'
    )
    series = dc.exported_series(text)
    assert series["kpi_orders"] == {"window", "scope", "scope_id"}
    assert series["kpi_stream_deadletters_total"] == {"reason"}


def test_builder_output_is_deterministic():
    builder = _load_builder()
    assert builder.render() == builder.render()
    json.loads(builder.render()["kpi-overview.json"])


# -- "Targets: month to date" ---------------------------------------------------------------------------


def test_overview_has_a_targets_row_after_where_it_falls(dashboards):
    """Attainment MTD, projected month-end attainment and MTD against LMTD per territory, for the
    KPI picked in $target, and active accounts' attainment; the projection's red is the alert's
    threshold."""
    overview = next(d for d in dashboards if d["title"] == "KPI overview")
    rows = [p["title"] for p in overview["panels"] if p["type"] == "row"]
    assert rows[:2] == ["Active accounts: where is it falling", "Targets: month to date ($target)"]
    target = next(v for v in overview["templating"]["list"] if v["name"] == "target")
    assert [o["value"] for o in target["options"]] == ["sales_amount", "orders", "visits"]
    assert target["current"]["value"] == "sales_amount"
    start = next(i for i, p in enumerate(overview["panels"]) if p["title"].startswith("Targets: month to date"))
    end = next(i for i, p in enumerate(overview["panels"]) if i > start and p["type"] == "row")
    row = {p["title"]: p for p in overview["panels"][start + 1:end]}
    assert sorted(row) == sorted([
        "Attainment MTD by territory: $target", "Projected month-end attainment by territory: $target",
        "Active accounts: attainment MTD by territory",
        "Targets by territory: $target, month to date against target and last month",
        "$target: month to date against last month to date (all territories)",
        "$target: MTD against LMTD by territory"])
    exprs = " ".join(t["expr"] for p in row.values() for t in p["targets"])
    assert 'window="$window"' not in exprs, "targets are monthly: the row does not follow $window"
    assert "kpi_${target}_projected_attainment{" in exprs and "kpi_active_accounts_attainment{" in exprs
    assert 'window="lmtd"' in exprs and 'window="mtd"' in exprs
    projected = row["Projected month-end attainment by territory: $target"]
    steps = projected["fieldConfig"]["defaults"]["thresholds"]["steps"]
    alert = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "kpi-alerts.yml").read_text())
    (rule,) = [r for g in alert["groups"] for r in g["rules"] if r.get("alert") == "ProjectedAttainmentBelowTarget"]
    assert [s["color"] for s in steps] == ["red", "orange", "green"]
    assert f"< {steps[1]['value']:.2f}" in rule["expr"]
    table = row["Targets by territory: $target, month to date against target and last month"]
    assert [t["refId"] for t in table["targets"]] == list("ABCDEFG")
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    # MTD, LMTD and their growth exist for every territory: kept to those with a target (the
    # target gauges exist only there)
    target_expr = table["targets"][0]["expr"]
    assert target_expr == 'max by (scope_id) (kpi_${target}_target{scope="territory", scope_id=~"$territory", window="mtd"})'
    assert [t["refId"] for t in table["targets"] if t["expr"].endswith(f" and on (scope_id) {target_expr}")] == \
        ["B", "F", "G"]


def test_target_queries_differ_only_in_kpi_and_scope():
    builder = _load_builder()
    generic = builder.target_queries()
    reps = builder.target_queries("orders", "rep", "$rep")
    assert {k: v.replace("${target}", "orders").replace('scope="territory"', 'scope="rep"')
            .replace("$territory", "$rep") for k, v in generic.items()} == reps


def test_reps_has_rep_attainment(dashboards):
    reps = next(d for d in dashboards if d["title"] == "Reps")
    table = _panel(reps, "Rep attainment, month to date")
    exprs = [t["expr"] for t in table["targets"]]
    assert len(exprs) == 8 and all('scope="rep", scope_id=~"$rep", window="mtd"' in e for e in exprs)
    assert sum("kpi_sales_amount" in e for e in exprs) == 4 and sum("kpi_orders" in e for e in exprs) == 4


def test_checker_reads_name_regex_selectors_and_label_replace():
    text = dc.default_metrics_text()
    good = ('max by (kpi, scope_id) (label_replace({__name__=~"kpi_.+_projected_attainment", window="mtd"}, '
            '"kpi", "$1", "__name__", "kpi_(.+)_projected_attainment"))')
    assert dc.check_expression("ok", good, text, "{{kpi}} {{scope_id}}") == []
    assert any("no exported metric matches" in p
               for p in dc.check_expression("x", 'max({__name__=~"kpi_.+_nope", window="mtd"})', text))
    assert any("matches no exported series" in p
               for p in dc.check_expression("x", 'max({__name__=~"kpi_.+_projected_attainment", window="30d"})', text))
    assert any("grouping label 'kpi'" in p
               for p in dc.check_expression("x", 'max by (kpi) ({__name__=~"kpi_.+_projected_attainment"})', text))

"""Build the Grafana dashboards of kpi-stream as JSON (the JSON files are committed).

    python deploy/grafana/build_dashboards.py           # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/build_dashboards.py --check   # exit 1 if a committed file is out of date

Three dashboards: "KPI overview" (the KPIs of the spec, section 3, led by "Active accounts: where
is it falling", whose territories link to their reps), "Reps" (the rep drill-down, reps listed by
territory; needs KPI_EXPORT_SCOPES to include rep) and "Processor health" (the worker's own
metrics). Every query is checked against the metrics a worker exports by
tests/deploy/test_dashboards.py (tests/deploy/dashboards_check.py).

KPI gauges are exported by the one worker owning a scope's partition; which worker that is changes
with rebalances, so KPI queries aggregate `max by (...)` over the labels they show, never per
instance. `kpi_stream_rep_territory_outlets` is the exception: each worker exports its partitions'
share, summed. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml
SCHEMA_VERSION = 39
WINDOWS = ("7d", "30d", "60d")  # KPI_WINDOWS default; the `$window` variable
HORIZONS = ("7d", "14d", "30d")


# -- panel helpers --------------------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    out = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
           "range": not instant, "instant": instant, "editorMode": "code"}
    if fmt != "time_series":
        out["format"] = fmt
    return out


def _targets(queries: list[tuple[str, str]], instant: bool = False) -> list[dict]:
    return [target(expr, legend, chr(ord("A") + i), instant) for i, (expr, legend) in enumerate(queries)]


def timeseries(title: str, queries: list[tuple[str, str]], unit: str = "short", description: str = "",
               stack: bool = False, decimals: int | None = None, min_zero: bool = True,
               links: list[dict] | None = None) -> dict:
    defaults: dict = {
        "unit": unit,
        "custom": {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 60,
            "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if min_zero:
        defaults["min"] = 0
    if decimals is not None:
        defaults["decimals"] = decimals
    if links:
        defaults["links"] = links  # data links: on a series' context menu
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, expr: str, unit: str = "short", description: str = "", decimals: int | None = None,
         thresholds: list[tuple[float | None, str]] | None = None, mappings: list | None = None,
         legend: str = "") -> dict:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    defaults: dict = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}, "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": _targets([(expr, legend)], instant=True),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "auto"},
    }


def table(title: str, queries: list[tuple[str, str]], columns: dict[str, str], sort_by: str,
          description: str = "", units: dict[str, str] | None = None, links: dict[str, list[dict]] | None = None,
          descending: bool = False) -> dict:
    """Instant queries as one table (format "table", merged on their labels): `columns` renames
    the fields to show (label names, `Value #A`...) in order and hides the rest."""
    overrides = [{"matcher": {"id": "byName", "options": name},
                  "properties": [{"id": "unit", "value": unit}]} for name, unit in (units or {}).items()]
    overrides += [{"matcher": {"id": "byName", "options": name},
                   "properties": [{"id": "links", "value": field_links}]} for name, field_links in (links or {}).items()]
    return {
        "type": "table", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": [target(expr, legend, chr(ord("A") + i), instant=True, fmt="table")
                    for i, (expr, legend) in enumerate(queries)],
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                        "overrides": overrides},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]},
                    "sortBy": [{"displayName": sort_by, "desc": descending}]},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "includeByName": {name: True for name in columns},
                "indexByName": {name: i for i, name in enumerate(columns)},
                "renameByName": columns}},
            {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": sort_by, "desc": descending}]}},
        ],
    }


def bargauge(title: str, queries: list[tuple[str, str]], unit: str = "short", description: str = "",
             decimals: int | None = None, thresholds: list[tuple[float | None, str]] | None = None,
             max_value: float | None = None) -> dict:
    """Instant queries as horizontal bars, one per series (in the order the query returns them:
    wrap it in sort() / sort_desc())."""
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "blue")])]
    defaults: dict = {"unit": unit, "min": 0, "thresholds": {"mode": "absolute", "steps": steps}}
    if max_value is not None:
        defaults["max"] = max_value
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "bargauge", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": _targets(queries, instant=True),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                    "valueMode": "color", "namePlacement": "left", "sizing": "auto", "minVizHeight": 10,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


@dataclass
class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line."""

    panels: list[dict] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def row(self, title: str) -> None:
        self._newline()
        self._place(row(title), 24, 1)
        self._newline()

    def add(self, panel: dict, w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        self._place(panel, w, h)

    def _place(self, panel: dict, w: int, h: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def _newline(self) -> None:
        if self.x:
            self.y += self.line_height
        self.x, self.line_height = 0, 0


def custom_variable(name: str, label: str, values: tuple[str, ...], default: str, description: str) -> dict:
    return {
        "type": "custom", "name": name, "label": label, "description": description,
        "query": ",".join(values), "multi": False, "includeAll": False,
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
        "hide": 0,
    }


def query_variable(name: str, label: str, query: str, description: str, all_value: str | None = ".*") -> dict:
    """A multi-value variable from a Prometheus query, All selected. "All" stands for `all_value`
    (`.*`: any value, listed or not); None: for the values the query lists (a regex of them)."""
    variable = {
        "type": "query", "name": name, "label": label, "description": description,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "regex": "", "hide": 0,
    }
    if all_value is None:
        del variable["allValue"]
    return variable


def dashboard(uid: str, title: str, description: str, tags: list[str], layout: Layout, variables: list[dict],
              time_from: str, links: list[dict], annotations: list[dict] | None = None) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": links,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }] + (annotations or [])},
        "templating": {"list": variables},
        "panels": layout.panels,
    }


def _link(title: str, uid: str) -> dict:
    return {"title": title, "type": "link", "url": f"/d/{uid}", "icon": "dashboard", "keepTime": True,
            "includeVars": False, "asDropdown": False, "tags": [], "targetBlank": False, "tooltip": ""}


# -- KPI overview ---------------------------------------------------------------------------------

KPI_UID = "kpi-stream-overview"
HEALTH_UID = "kpi-stream-processor-health"
REPS_UID = "kpi-stream-reps"

# -- Active accounts: where is it falling ----------------------------------------------------------
#
# "Are active accounts dropping, and where?": each scope's active accounts now against the same
# series `WEEK_AGO` earlier, the scopes that lost most, and when the ActiveAccounts* alerts fired.
# tests/e2e/test_prometheus_live.py evaluates these very expressions (from the committed JSON) with
# a short offset in place of WEEK_AGO against a live Prometheus: it cannot wait a week.

WEEK_AGO = "7d"
FALLING_TOP = 10
ACTIVE_ALERTS = 'ALERTS{alertname=~"ActiveAccounts.*", alertstate="firing"}'


def active_change(scope: str, ids: str, offset: str = WEEK_AGO, window: str = "$window") -> dict[str, str]:
    """PromQL for a scope type's active accounts against `offset` earlier, per scope_id: `change`
    (accounts now minus then), `relative` (now / then - 1; scopes with none then are left out),
    `falling` (the FALLING_TOP largest falls, falls only), `falling_relative` and `falling_now`
    (their relative change and current level, for the same scopes)."""
    selector = f'kpi_active_accounts{{scope="{scope}", scope_id=~"{ids}", window="{window}"}}'
    now = f"max by (scope_id) ({selector})"
    then = f"max by (scope_id) ({selector} offset {offset})"
    change = f"{now} - {then}"
    falling = f"bottomk({FALLING_TOP}, ({change}) < 0)"
    relative = f"{now} / ({then} > 0) - 1"
    return {"change": change, "relative": relative, "falling": falling,
            "falling_relative": f"({relative}) and on (scope_id) {falling}",
            "falling_now": f"{now} and on (scope_id) {falling}"}


def active_alerts_annotation() -> dict:
    """The ActiveAccounts* alerts' firing, from Prometheus's ALERTS series, on every time series."""
    return {
        "name": "Active-accounts alerts", "datasource": DATASOURCE, "enable": True, "hide": False,
        "iconColor": "red", "expr": ACTIVE_ALERTS, "step": "60s",
        "titleFormat": "{{alertname}}", "textFormat": "{{scope}} {{scope_id}} ({{severity}})",
        "tagKeys": "alertname,scope,scope_id,severity", "useValueForTime": False,
        "target": {"refId": "Anno", "expr": ACTIVE_ALERTS, "datasource": DATASOURCE, "editorMode": "code",
                   "range": True, "instant": False},
    }


def falling_row(lay: "Layout", scope: str, variable: str, name: str, plural: str,
                link: list[dict] | None = None, series_link: list[dict] | None = None) -> None:
    """`link`: data links of the table's scope column (the cell's value: `${__value.raw}`);
    `series_link`: of the time series (a series' scope: `${__field.labels.scope_id}`)."""
    q = active_change(scope, f"${variable}")
    lay.add(timeseries(
        f"Active accounts: change against {WEEK_AGO} ago by {name} ($window window)", [(q["change"], "{{scope_id}}")],
        min_zero=False, description=f"kpi_active_accounts now minus {WEEK_AGO} earlier (PromQL offset {WEEK_AGO}), "
        f"per {name}. A {name} with no value then (new, or its outlets arrived since) is not shown. "
        "Red marks: ActiveAccountsSharpFall / ActiveAccountsDropWeekOverWeek firing.", links=series_link))
    lay.add(timeseries(
        f"Active accounts: relative change against {WEEK_AGO} ago by {name}", [(q["relative"], "{{scope_id}}")],
        unit="percentunit", decimals=1, min_zero=False,
        description=f"now / {WEEK_AGO} earlier - 1. ActiveAccountsDropWeekOverWeek fires below -10 % of the 30d "
                    "window (baseline at least 20).", links=series_link))
    lay.add(table(
        f"The {FALLING_TOP} {plural} falling fastest ($window window, against {WEEK_AGO} ago)",
        [(q["falling"], ""), (q["falling_relative"], ""), (q["falling_now"], "")],
        {"scope_id": name, "Value #A": "change", "Value #B": "relative change", "Value #C": "active now"},
        "change", units={"relative change": "percentunit"}, links={name: link} if link else None,
        description=f"bottomk({FALLING_TOP}) of the change against {WEEK_AGO} ago; falls only, largest first."),
        24, 9)


def reps_of_territory(territory: str) -> dict:
    """A data link to Reps for `territory` (a data-link variable), same window and time range."""
    return {"title": "This territory's reps (KPI_EXPORT_SCOPES must include rep)",
            "url": f"/d/{REPS_UID}/reps?var-window=${{window}}&var-territory={territory}&${{__url_time_range}}",
            "targetBlank": False}


def _by_region(metric: str, window: str = "$window", extra: str = "") -> str:
    return f'max by (scope_id) ({metric}{{scope="region", scope_id=~"$region", window="{window}"{extra}}})'


def _by_territory(metric: str, window: str = "$window", extra: str = "") -> str:
    return f'max by (scope_id) ({metric}{{scope="territory", scope_id=~"$territory", window="{window}"{extra}}})'


def _global(metric: str, window: str = "$window", extra: str = "") -> str:
    return f'max({metric}{{scope="global", window="{window}"{extra}}})'


# -- Targets: month to date ------------------------------------------------------------------------
#
# "Where do we stand against this month's targets, will we make it, and how does the month compare
# with last month so far?" Targets (spec 9) are exported for the current periods' aliases only
# (window="mtd" for monthly targets; no lmtd); `kpi_<kpi>{window="lmtd"}` is last month to date
# (spec 8). Every query of the row keeps to the territories with a target for `$target`.
# tests/e2e/test_prometheus_live.py evaluates these expressions (from the committed JSON) against
# a live Prometheus and compares them with the oracle's values.

# `$target`: targetable KPIs with a territory scope and a projection (not active_accounts: a
# distinct count, it has its own panel); the ones the demo's generator sets targets for.
TARGET_KPIS = ("sales_amount", "orders", "visits")
PROJECTION_WARNING = 0.90  # ProjectedAttainmentBelowTarget fires below this (after day 3)


def target_queries(kpi: str = "${target}", scope: str = "territory", ids: str = "$territory") -> dict[str, str]:
    """PromQL per scope_id of the month's target of `kpi` and what it is measured against: `target`,
    `mtd` (actual so far), `attainment`, `projected`, `projected_attainment`, `lmtd` (last month
    to date) and `growth` (mtd / lmtd - 1; scopes with no lmtd left out), each for the scopes with
    a target only."""
    def gauge(metric: str, window: str = "mtd") -> str:
        return f'max by (scope_id) ({metric}{{scope="{scope}", scope_id=~"{ids}", window="{window}"}})'

    target = gauge(f"kpi_{kpi}_target")
    mtd, lmtd = gauge(f"kpi_{kpi}"), gauge(f"kpi_{kpi}", "lmtd")
    return {
        "target": target,
        "mtd": f"{mtd} and on (scope_id) {target}",
        "attainment": gauge(f"kpi_{kpi}_attainment"),
        "projected": gauge(f"kpi_{kpi}_projected"),
        "projected_attainment": gauge(f"kpi_{kpi}_projected_attainment"),
        "lmtd": f"{lmtd} and on (scope_id) {target}",
        "growth": f"({mtd} / ({lmtd} > 0) - 1) and on (scope_id) {target}",
    }


_ON_COURSE = [(None, "red"), (PROJECTION_WARNING, "orange"), (1.0, "green")]


def targets_row(lay: "Layout") -> None:
    q = target_queries()
    lay.row("Targets: month to date ($target)")
    lay.add(bargauge(
        "Attainment MTD by territory: $target", [(f"sort_desc({q['attainment']})", "{{scope_id}}")],
        unit="percentunit", decimals=1,
        description="kpi_${target}_attainment, window mtd: the month's actual so far / the month's target "
                    "(spec 9), per territory with a target. Grows through the month: compare with the projection."),
        8, 10)
    lay.add(bargauge(
        "Projected month-end attainment by territory: $target",
        [(f"sort({q['projected_attainment']})", "{{scope_id}}")], unit="percentunit", decimals=1,
        thresholds=_ON_COURSE,
        description="kpi_${target}_projected_attainment, window mtd: at this month's run rate (actual x month "
                    "length / time elapsed), the month-end value / target; lowest first. Red below "
                    f"{PROJECTION_WARNING:.0%} (ProjectedAttainmentBelowTarget, after day 3 of the month, "
                    "when it stays below for 24 hours)."), 8, 10)
    lay.add(bargauge(
        "Active accounts: attainment MTD by territory",
        [(f"sort_desc({_by_territory('kpi_active_accounts_attainment', window='mtd')})", "{{scope_id}}")],
        unit="percentunit", decimals=1,
        description="kpi_active_accounts_attainment, window mtd: outlets that ordered this month / the month's "
                    "target. A distinct count: no projection (an outlet counts once, whenever it orders)."),
        8, 10)
    lay.add(table(
        "Targets by territory: $target, month to date against target and last month",
        [(q["target"], ""), (q["mtd"], ""), (q["attainment"], ""), (q["projected"], ""),
         (q["projected_attainment"], ""), (q["lmtd"], ""), (q["growth"], "")],
        {"scope_id": "territory", "Value #A": "target", "Value #B": "MTD", "Value #C": "attainment",
         "Value #D": "projected", "Value #E": "projected attainment", "Value #F": "LMTD",
         "Value #G": "MTD against LMTD"},
        "projected attainment",
        units={"attainment": "percentunit", "projected attainment": "percentunit", "MTD against LMTD": "percentunit"},
        links={"territory": [reps_of_territory("${__value.raw}")]},
        description="Territories with a target for $target this month, lowest projected attainment first. "
                    "MTD: this month so far; LMTD: last month up to the same point (spec 8); MTD against LMTD: "
                    "MTD / LMTD - 1 (empty when LMTD is 0)."), 24, 10)
    lay.add(timeseries(
        "$target: month to date against last month to date (all territories)",
        [(_global("kpi_${target}", window="mtd"), "MTD"), (_global("kpi_${target}", window="lmtd"), "LMTD")],
        decimals=2, description="Global kpi_${target}, windows mtd and lmtd: this month so far against last month "
                                "up to the same point. Both fall to the new month's values at local midnight of the 1st."))
    lay.add(timeseries(
        "$target: MTD against LMTD by territory", [(q["growth"], "{{scope_id}}")], unit="percentunit",
        decimals=1, min_zero=False,
        description="mtd / lmtd - 1 per territory with a target: above 0, ahead of last month at the same point."))


# -- Field execution --------------------------------------------------------------------------------
#
# "Are reps working their beat, reaching the outlet universe, spending time in market, and what do
# the orders come to after returns?" (spec 10). Rolling windows via `$window`; `registered_outlets`
# has no window (window="none"). tests/e2e/test_prometheus_live.py evaluates these expressions
# (from the committed JSON) against a live Prometheus and compares them with the oracle's values.

COMPLIANCE_WARNING = 0.80  # call compliance below this is orange, below 0.6 red


def field_queries(scope: str = "territory", ids: str = "$territory", window: str = "$window") -> dict[str, str]:
    """PromQL per scope_id of `scope` (`global`: one series, no scope_id) of the field execution KPIs
    the row shows, by KPI name."""
    def gauge(kpi: str, win: str = window) -> str:
        if scope == "global":
            return f'max(kpi_{kpi}{{scope="global", window="{win}"}})'
        return f'max by (scope_id) (kpi_{kpi}{{scope="{scope}", scope_id=~"{ids}", window="{win}"}})'

    kpis = ("planned_calls", "calls_on_plan", "call_compliance", "unplanned_visits", "coverage", "active_rate",
            "avg_visit_minutes", "sales_amount", "returned_amount", "net_sales_amount")
    out = {kpi: gauge(kpi) for kpi in kpis}
    out["registered_outlets"] = gauge("registered_outlets", "none")
    return out


_COMPLIANCE = [(None, "red"), (0.6, "orange"), (COMPLIANCE_WARNING, "green")]


def field_execution_row(lay: "Layout") -> None:
    t, g = field_queries(), field_queries("global")
    lay.row("Field execution ($window window)")
    lay.add(stat("Call compliance", g["call_compliance"], unit="percentunit", decimals=1, thresholds=_COMPLIANCE,
                 description="calls_on_plan / planned_calls (global): planned (not cancelled) calls of the beat "
                             "plans inside the window visited by the planned rep on the planned local date."), 6, 4)
    lay.add(stat("Coverage", g["coverage"], unit="percentunit", decimals=1,
                 description="Registered outlets with a visit inside the window / registered_outlets (global; "
                             "the denominator is every outlet onboarded so far, whatever the window)."), 6, 4)
    lay.add(stat("Time in market (minutes per visit)", g["avg_visit_minutes"], decimals=1,
                 description="avg_visit_minutes (global): mean of check-out - check-in over visits inside the window "
                             "that have both (check-out not before check-in)."), 6, 4)
    lay.add(stat("Net sales", g["net_sales_amount"], decimals=2,
                 description="net_sales_amount (global): sales_amount (cancelled orders left out) - returned_amount "
                             "(returns counted at their own time), base currency. May be negative."), 6, 4)
    lay.add(bargauge(
        "Call compliance by territory", [(f"sort({t['call_compliance']})", "{{scope_id}}")], unit="percentunit",
        decimals=1, thresholds=_COMPLIANCE, max_value=1,
        description="kpi_call_compliance per territory, lowest first: calls on plan / planned calls. A territory "
                    "with no planned call in the window has no value."), 8, 10)
    lay.add(bargauge(
        "Coverage by territory", [(f"sort({t['coverage']})", "{{scope_id}}")], unit="percentunit", decimals=1,
        max_value=1,
        description="kpi_coverage per territory, lowest first: registered outlets visited inside the window / "
                    "registered outlets of the territory."), 8, 10)
    lay.add(bargauge(
        "Time in market by territory (minutes per visit)", [(f"sort({t['avg_visit_minutes']})", "{{scope_id}}")],
        decimals=1,
        description="kpi_avg_visit_minutes per territory, shortest first: mean check-in to check-out of the "
                    "window's visits."), 8, 10)
    lay.add(table(
        "Field execution by territory ($window window)",
        [(t["planned_calls"], ""), (t["calls_on_plan"], ""), (t["call_compliance"], ""),
         (t["unplanned_visits"], ""), (t["registered_outlets"], ""), (t["coverage"], ""), (t["active_rate"], ""),
         (t["avg_visit_minutes"], ""), (t["sales_amount"], ""), (t["returned_amount"], ""),
         (t["net_sales_amount"], "")],
        {"scope_id": "territory", "Value #A": "planned calls", "Value #B": "calls on plan",
         "Value #C": "call compliance", "Value #D": "unplanned visits", "Value #E": "registered outlets",
         "Value #F": "coverage", "Value #G": "active rate", "Value #H": "minutes per visit",
         "Value #I": "sales", "Value #J": "returned", "Value #K": "net sales"},
        "call compliance",
        units={"call compliance": "percentunit", "coverage": "percentunit", "active rate": "percentunit"},
        links={"territory": [reps_of_territory("${__value.raw}")]},
        description="Per territory, lowest call compliance first. Unplanned visits: visits with no planned call "
                    "for their outlet, rep and local date. Active rate: registered outlets with an order inside "
                    "the window / registered outlets. Net sales = sales - returned (spec 10)."), 24, 10)
    lay.add(timeseries(
        "Call compliance and coverage", [(g["call_compliance"], "call compliance"), (g["coverage"], "coverage"),
                                         (g["active_rate"], "active rate")],
        unit="percentunit", decimals=1, description="Global, over time."))
    lay.add(timeseries(
        "Net sales against returns", [(g["sales_amount"], "sales"), (g["returned_amount"], "returned"),
                                      (g["net_sales_amount"], "net sales")],
        decimals=2, min_zero=False,
        description="Global sales_amount, returned_amount and net_sales_amount (= sales - returned) inside the "
                    "window, base currency."))
    lay.add(timeseries(
        "Call compliance by territory over time", [(t["call_compliance"], "{{scope_id}}")], unit="percentunit", decimals=1,
        description="kpi_call_compliance per territory over time."))
    lay.add(timeseries(
        "Time in market over time (minutes per visit)",
        [(g["avg_visit_minutes"], "all"), (t["avg_visit_minutes"], "{{scope_id}}")], decimals=1,
        description="kpi_avg_visit_minutes, global and per territory, over time."))


def kpi_overview() -> dict:
    lay = Layout()
    lay.row("Active accounts: where is it falling")
    # A rep is not in one territory (its outlets can be anywhere, and move independently), so rep
    # gauges carry no territory label: the links open Reps with its `$territory` set, whose `$rep`
    # lists the reps with outlets assigned there now (kpi_stream_rep_territory_outlets).
    falling_row(lay, "territory", "territory", "territory", "territories",
                link=[reps_of_territory("${__value.raw}")],
                series_link=[reps_of_territory("${__field.labels.scope_id}")])
    targets_row(lay)
    field_execution_row(lay)

    lay.row("Accounts ($window window)")
    lay.add(stat("Active accounts", _global("kpi_active_accounts"),
                 description="Outlets with at least one order inside the window (global)."), 6, 4)
    lay.add(stat("Dormant accounts", _global("kpi_dormant_accounts"),
                 description="Outlets that ordered before, but not inside the window (global)."), 6, 4)
    lay.add(stat("Reactivated accounts", _global("kpi_reactivated_accounts"),
                 description="Outlets ordering inside the window after a gap longer than KPI_DORMANCY (global)."), 6, 4)
    lay.add(stat("Strike rate", _global("kpi_visit_to_order_ratio"), unit="percentunit", decimals=1,
                 description="Productive visits / visits inside the window (global)."), 6, 4)
    for metric, name in (("kpi_active_accounts", "Active"), ("kpi_dormant_accounts", "Dormant"),
                         ("kpi_reactivated_accounts", "Reactivated")):
        lay.add(timeseries(f"{name} accounts by region", [(_by_region(metric), "{{scope_id}}")]))
        lay.add(timeseries(f"{name} accounts by territory", [(_by_territory(metric), "{{scope_id}}")]))

    lay.row("Conversion and visits ($window window)")
    lay.add(timeseries(
        "First-order conversion by horizon",
        [('max by (horizon) (kpi_first_order_conversion{scope="global", window="$window"})', "{{horizon}} horizon")],
        unit="percentunit", description="Outlets onboarded inside the window that ordered within the horizon "
                                        "after onboarding (global).", decimals=1))
    lay.add(timeseries(
        "First-order conversion by region (30d horizon)",
        [(_by_region("kpi_first_order_conversion", extra=', horizon="30d"'), "{{scope_id}}")],
        unit="percentunit", decimals=1))
    lay.add(timeseries(
        "Strike rate by region", [(_by_region("kpi_visit_to_order_ratio"), "{{scope_id}}")],
        unit="percentunit", decimals=1, description="visit_to_order_ratio: productive visits / visits."))
    lay.add(timeseries(
        "Visits and productive visits",
        [(_global("kpi_visits"), "visits"), (_global("kpi_productive_visits"), "productive visits")],
        description="Global; a productive visit has an order with the same outlet_id and visit_id."))

    lay.row("Orders ($window window)")
    lay.add(timeseries("Orders by region", [(_by_region("kpi_orders"), "{{scope_id}}")]))
    lay.add(timeseries("Sales amount by region", [(_by_region("kpi_sales_amount"), "{{scope_id}}")],
                       description="Sum of order amounts in the base currency (KPI_BASE_CURRENCY).", decimals=2))
    lay.add(timeseries("Average order value by region", [(_by_region("kpi_average_order_value"), "{{scope_id}}")],
                       description="sales_amount / orders, base currency.", decimals=2))
    lay.add(timeseries(
        "Orders, average order value and lines per order",
        [(_global("kpi_orders"), "orders"), (_global("kpi_average_order_value"), "average order value"),
         (_global("kpi_lines_per_order"), "lines per order")],
        description="Global.", decimals=2))

    lay.row("Lead pipeline")
    lay.add(stat("Open leads", _global("kpi_open_leads", window="none"),
                 description="Leads created and not won or lost (no window)."), 6, 4)
    lay.add(stat("Win rate ($window)", _global("kpi_win_rate"), unit="percentunit", decimals=1,
                 description="won / (won + lost) over leads closed inside the window."), 6, 4)
    lay.add(stat("Pipeline velocity ($window)", _global("kpi_pipeline_velocity"), decimals=2,
                 description="open leads x win rate x average deal size / average sales cycle, per day."), 6, 4)
    lay.add(stat("New leads ($window)", _global("kpi_new_leads")), 6, 4)
    lay.add(timeseries("Open leads by region", [
        (_global("kpi_open_leads", window="none"), "all"),
        (_by_region("kpi_open_leads", window="none"), "{{scope_id}}")]))
    lay.add(timeseries("New leads by region ($window)", [
        (_global("kpi_new_leads"), "all"), (_by_region("kpi_new_leads"), "{{scope_id}}")]))
    lay.add(timeseries("Win rate ($window)", [
        (_global("kpi_win_rate"), "all"), (_by_region("kpi_win_rate"), "{{scope_id}}")],
        unit="percentunit", decimals=1))
    lay.add(timeseries("Pipeline velocity ($window, per day)", [
        (_global("kpi_pipeline_velocity"), "all"), (_by_region("kpi_pipeline_velocity"), "{{scope_id}}")],
        decimals=2))
    lay.add(timeseries("Average deal size ($window)", [
        (_global("kpi_avg_deal_size"), "all"), (_by_region("kpi_avg_deal_size"), "{{scope_id}}")], decimals=2), 8)
    lay.add(timeseries("Average sales cycle ($window, days)", [
        (_global("kpi_avg_sales_cycle_days"), "all"), (_by_region("kpi_avg_sales_cycle_days"), "{{scope_id}}")],
        decimals=1), 8)
    lay.add(timeseries("Average open lead age (days)", [
        (_global("kpi_avg_open_lead_age_days", window="none"), "all"),
        (_by_region("kpi_avg_open_lead_age_days", window="none"), "{{scope_id}}")], decimals=1), 8)

    lay.row("Rep activity ($window window)")
    lay.add(timeseries(
        "Activities by kind",
        [('max by (kind) (kpi_activities{scope="global", window="$window", kind!="all"})', "{{kind}}")],
        stack=True, description="Activity events inside the window, by kind (global; rep-level series are "
                                "exported only when KPI_EXPORT_SCOPES includes rep)."), 18)
    lay.add(stat("Activities, all kinds", _global("kpi_activities", extra=', kind="all"')), 6, 8)

    variables = [
        custom_variable("window", "Window", WINDOWS, "30d", "KPI window (KPI_WINDOWS)"),
        query_variable("region", "Region", 'label_values(kpi_active_accounts{scope="region"}, scope_id)',
                       "Regions (scope_id of scope=region)"),
        query_variable("territory", "Territory", 'label_values(kpi_active_accounts{scope="territory"}, scope_id)',
                       "Territories (scope_id of scope=territory)"),
        custom_variable("target", "Target KPI", TARGET_KPIS, "sales_amount",
                        "KPI of the Targets row (targetable KPIs with territory targets and a projection)"),
    ]
    return dashboard(
        KPI_UID, "KPI overview",
        "Field-sales KPIs of kpi-stream (spec section 3): accounts, conversion, orders, visits, lead pipeline "
        "and rep activity, by region and territory, this month against its targets and last month, and field "
        "execution (call compliance, coverage, time in market, net sales against returns).",
        ["kpi-stream", "kpi"], lay, variables, "now-7d",
        [_link("Reps", REPS_UID), _link("Processor health", HEALTH_UID)], [active_alerts_annotation()],
    )


# -- Reps -----------------------------------------------------------------------------------------


# Outlets per (territory, assigned rep), exported by each worker for the partitions it holds
# (stream/worker/metrics.py): summed over the workers, unlike the KPI gauges.
REP_TERRITORY_OUTLETS = "kpi_stream_rep_territory_outlets"
TERRITORY_OUTLETS_BY_REP = f'sum by (rep) ({REP_TERRITORY_OUTLETS}{{territory=~"$territory", rep=~"$rep"}})'


def _by_rep(metric: str, window: str = "$window", extra: str = "") -> str:
    return f'max by (scope_id) ({metric}{{scope="rep", scope_id=~"$rep", window="{window}"{extra}}})'


def reps() -> dict:
    """The rep drill-down. Rep-level gauges exist only where KPI_EXPORT_SCOPES includes `rep`
    (docs/operations.md "Rep-level gauges" has the series count to expect)."""
    lay = Layout()
    lay.row("Active accounts by rep: where is it falling")
    falling_row(lay, "rep", "rep", "rep", "reps")
    lay.row("Reps ($window window)")
    lay.add(timeseries("Active accounts by rep", [(_by_rep("kpi_active_accounts"), "{{scope_id}}")],
                       description="Outlets assigned to the rep with an order inside the window."))
    lay.add(timeseries("Dormant accounts by rep", [(_by_rep("kpi_dormant_accounts"), "{{scope_id}}")]))
    lay.add(timeseries("Orders by rep", [(_by_rep("kpi_orders"), "{{scope_id}}")],
                       description="Orders naming the rep (orders naming none: the outlet's assigned rep)."))
    lay.add(timeseries("Strike rate by rep", [(_by_rep("kpi_visit_to_order_ratio"), "{{scope_id}}")],
                       unit="percentunit", decimals=1, description="Productive visits / visits of the rep."))
    lay.add(timeseries("Activities by rep (all kinds)", [(_by_rep("kpi_activities", extra=', kind="all"'),
                                                          "{{scope_id}}")]))
    lay.add(timeseries("Open leads by rep", [(_by_rep("kpi_open_leads", window="none"), "{{scope_id}}")]))
    lay.row("Rep targets: month to date")
    sales, orders = target_queries("sales_amount", "rep", "$rep"), target_queries("orders", "rep", "$rep")
    lay.add(bargauge(
        "Projected month-end sales attainment by rep", [(f"sort({sales['projected_attainment']})", "{{scope_id}}")],
        unit="percentunit", decimals=1, thresholds=_ON_COURSE,
        description="kpi_sales_amount_projected_attainment, window mtd: at this month's run rate, the rep's "
                    "month-end sales / the rep's target; lowest first. Reps are not alerted "
                    "(ProjectedAttainmentBelowTarget leaves out scope rep)."), 8, 10)
    lay.add(table(
        "Rep attainment, month to date (sales and orders)",
        [(sales["target"], ""), (sales["mtd"], ""), (sales["attainment"], ""), (sales["projected_attainment"], ""),
         (orders["target"], ""), (orders["mtd"], ""), (orders["attainment"], ""), (orders["projected_attainment"], "")],
        {"scope_id": "rep", "Value #A": "sales target", "Value #B": "sales MTD", "Value #C": "sales attainment",
         "Value #D": "sales projected", "Value #E": "orders target", "Value #F": "orders MTD",
         "Value #G": "orders attainment", "Value #H": "orders projected"},
        "sales projected",
        units={name: "percentunit" for name in ("sales attainment", "sales projected", "orders attainment",
                                                 "orders projected")},
        description="Reps of $rep with a sales or orders target this month: target, actual so far, attainment "
                    "and projected month-end attainment (\"projected\" columns), lowest projected sales first."),
        16, 10)
    lay.add(timeseries("Outlets by rep in $territory", [(TERRITORY_OUTLETS_BY_REP, "{{rep}}")], stack=True,
                       description="Outlets in the selected territories assigned to each rep now "
                                   "(kpi_stream_rep_territory_outlets, summed over the workers). Not a KPI: it "
                                   "is what $rep lists for $territory."), 24)
    variables = [
        custom_variable("window", "Window", WINDOWS, "30d", "KPI window (KPI_WINDOWS)"),
        query_variable("territory", "Territory", f"label_values({REP_TERRITORY_OUTLETS}, territory)",
                       "Territories with outlets; $rep lists the reps with outlets assigned in them"),
        # "All" means the reps listed for $territory (no allValue): `.*` would bring back every rep
        query_variable("rep", "Rep", f'label_values({REP_TERRITORY_OUTLETS}{{territory=~"$territory"}}, rep)',
                       "Reps with outlets assigned in $territory now (kpi_stream_rep_territory_outlets; exported "
                       "only when KPI_EXPORT_SCOPES includes rep)", all_value=None),
    ]
    return dashboard(
        REPS_UID, "Reps",
        "Rep-level KPIs, the reps whose active accounts fall most and the reps' targets this month, for the reps "
        "of the selected territories. "
        "Needs KPI_EXPORT_SCOPES to include rep (not the default): see docs/operations.md, \"Rep-level gauges\", "
        "for the series it adds.",
        ["kpi-stream", "kpi"], lay, variables, "now-7d",
        [_link("KPI overview", KPI_UID), _link("Processor health", HEALTH_UID)], [active_alerts_annotation()],
    )


# -- Processor health -----------------------------------------------------------------------------

_I = 'instance=~"$instance"'


def processor_health() -> dict:
    lay = Layout()
    lay.row("Workers")
    lay.add(stat("Workers up", 'sum(up{job="kpi-stream", instance=~"$instance"})',
                 thresholds=[(None, "red"), (1, "green")]), 4, 4)
    lay.add(stat("Workers ready", f"sum(kpi_stream_ready{{{_I}}})",
                 description="kpi_stream_ready: state recovered and not rebalancing (updated when /ready is "
                             "probed).", thresholds=[(None, "red"), (1, "green")]), 4, 4)
    lay.add(stat("Redis", f"min(kpi_stream_redis_up{{{_I}}})",
                 description="0 when any worker's last Redis write failed.",
                 thresholds=[(None, "red"), (1, "green")],
                 mappings=[{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                                          "1": {"text": "UP", "color": "green"}}}]), 4, 4)
    lay.add(stat("Last publish age", f"time() - max(kpi_stream_last_publish_timestamp_seconds{{{_I}}})", unit="s",
                 description="Seconds since the newest KPI publication round of any worker (KpiSeriesStale "
                             "fires above 300 s while there is work).",
                 thresholds=[(None, "green"), (60, "orange"), (300, "red")], decimals=0), 4, 4)
    lay.add(stat("KPI updates / s", f"sum(rate(kpi_stream_kpi_updates_published_total{{{_I}}}[$__rate_interval]))",
                 unit="ops", decimals=1), 4, 4)
    lay.add(stat("Events consumed / s", f"sum(rate(kpi_stream_events_consumed_total{{{_I}}}[$__rate_interval]))",
                 unit="ops", decimals=1), 4, 4)
    lay.add(timeseries("Up, ready and Redis per worker", [
        ('up{job="kpi-stream", instance=~"$instance"}', "{{instance}} up"),
        (f"kpi_stream_ready{{{_I}}}", "{{instance}} ready"),
        (f"kpi_stream_redis_up{{{_I}}}", "{{instance}} redis")], decimals=0))
    lay.add(timeseries("Last publish age per worker", [
        (f"time() - kpi_stream_last_publish_timestamp_seconds{{{_I}}}", "{{instance}}")], unit="s",
        description="A worker that owns no scope partition with data never publishes; that is normal."))

    lay.row("Throughput")
    lay.add(timeseries("Events consumed by topic and type", [
        (f"sum by (topic, type) (rate(kpi_stream_events_consumed_total{{{_I}}}[$__rate_interval]))",
         "{{topic}} {{type}}")], unit="ops",
        description="type `invalid`: the message could not be decoded (see dead letters). Events routed from "
                    "sales.events are counted again on their typed topic."), 16)
    lay.add(timeseries("Events consumed by worker", [
        (f"sum by (instance) (rate(kpi_stream_events_consumed_total{{{_I}}}[$__rate_interval]))", "{{instance}}")],
        unit="ops"), 8)
    lay.add(timeseries("KPI updates published by worker", [
        (f"sum by (instance) (rate(kpi_stream_kpi_updates_published_total{{{_I}}}[$__rate_interval]))",
         "{{instance}}")], unit="ops"))
    lay.add(timeseries("Late corrections by family", [
        (f"sum by (family) (rate(kpi_stream_late_corrections_total{{{_I}}}[$__rate_interval]))", "{{family}}")],
        unit="ops", description="Accepted events older than the current slot: they correct published windows."))

    lay.row("Lag and latency")
    lay.add(timeseries("Consumer lag by topic", [
        (f"sum by (topic) (max by (topic, partition) (kpi_stream_consumer_lag{{{_I}}}))", "{{topic}}")],
        description="Messages behind the end of the assigned partitions (ConsumerLagGrowing: > 10000 and growing)."))
    lay.add(timeseries("Consumer lag by partition", [
        (f"max by (topic, partition) (kpi_stream_consumer_lag{{{_I}}})", "{{topic}}[{{partition}}]")],
        description="Every partition should move within seconds, even while a worker catches up. Counted "
                    "from the next offset to apply (the committed offset before a partition's first "
                    "delivery); only the worker holding a partition exports it."))
    lay.add(timeseries("Partition stalled time", [
        (f"max by (topic, partition) (kpi_stream_partition_stalled_seconds{{{_I}}})", "{{topic}}[{{partition}}]")],
        unit="s",
        description="Seconds since each partition last made progress while it had records to read; 0 when "
                    "caught up (PartitionStalled: above 600 s for 5 minutes)."))
    lay.add(timeseries("Publish latency (event to KPI update)", [
        (f"histogram_quantile({q}, sum by (le) (rate(kpi_stream_publish_latency_seconds_bucket{{{_I}}}"
         f"[$__rate_interval])))", f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)], unit="s",
        description="Per applied event: from its input message's Kafka timestamp to the publication round "
                    "that took its changes. With the default 1 s interval expect p50 ~0.7 s and p99 under 1.5 s."))
    lay.add(timeseries("Mean publish latency by worker", [
        (f"sum by (instance) (rate(kpi_stream_publish_latency_seconds_sum{{{_I}}}[$__rate_interval])) / "
         f"sum by (instance) (rate(kpi_stream_publish_latency_seconds_count{{{_I}}}[$__rate_interval]))",
         "{{instance}}")], unit="s"))

    lay.row("Input quality")
    lay.add(timeseries("Dead letters by reason", [
        (f"sum by (reason) (rate(kpi_stream_deadletters_total{{{_I}}}[$__rate_interval]))", "{{reason}}")],
        unit="ops", stack=True, description="Messages rejected to kpi.deadletter (spec section 4 reasons)."), 8)
    lay.add(timeseries("Dead-letter share of consumed", [
        (f"sum(rate(kpi_stream_deadletters_total{{{_I}}}[$__rate_interval])) / "
         f"sum(rate(kpi_stream_events_consumed_total{{{_I}}}[$__rate_interval]))", "dead-lettered")],
        unit="percentunit", decimals=2, description="DeadLetterRateHigh fires above 5% for 10 minutes."), 8)
    lay.add(timeseries("Ignored events by reason", [
        (f"sum by (reason) (rate(kpi_stream_ignored_events_total{{{_I}}}[$__rate_interval]))", "{{reason}}")],
        unit="ops", description="duplicate: same event_id as an accepted event; already_closed: a second close "
                                "of a lead."), 8)

    lay.row("State")
    lay.add(timeseries("State entities by kind", [
        (f"sum by (kind) (kpi_stream_state_entities{{{_I}}})", "{{kind}}")],
        description="Outlets, leads and scopes held in memory across the workers."))
    lay.add(timeseries("State entities per worker", [
        (f"kpi_stream_state_entities{{{_I}}}", "{{instance}} {{kind}}")]))

    variables = [query_variable("instance", "Worker", 'label_values(up{job="kpi-stream"}, instance)',
                                "kpi-stream workers (scrape targets of job kpi-stream)")]
    return dashboard(
        HEALTH_UID, "Processor health",
        "kpi-stream workers: throughput, consumer lag, dead letters, publish latency, state, liveness.",
        ["kpi-stream", "operations"], lay, variables, "now-6h", [_link("KPI overview", KPI_UID)],
    )


DASHBOARDS = {"kpi-overview.json": kpi_overview, "processor-health.json": processor_health, "reps.json": reps}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

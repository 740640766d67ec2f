"""Check Grafana dashboards against the series a kpi-stream worker exports.

`check_dashboard_queries(dashboards, exposition_text) -> list[str]` returns problems (empty = fine):
every metric a panel or template-variable query selects must be in the exposition (a worker's
/metrics text), every label matcher, grouping label (`by`, `without`, `on`, `ignoring`) and legend
`{{label}}` must be a label the metrics carry, and each selector must match at least one exported
sample (so `kpi_open_leads{window="30d"}` or `kpi_activities{scope="region"}` are caught) when the
metric has samples at all (a labelled metric with none yet is checked by name only). Grafana variables are expanded first: custom variables to each of
their options, query variables to their `allValue` (`.*`), `$__rate_interval` and friends to `5m`.

`default_metrics_text()` builds a stand-in exposition from the worker's own metric objects
(stream/worker/metrics.py, stream/worker/sinks.py); a running worker's /metrics can replace it.

The PromQL reader here is a tokenizer, enough to find selectors and grouping clauses; syntax is
checked separately with promtool (`promql_syntax_problems`). Standard library plus
prometheus_client (for the exposition parser); `default_metrics_text` imports the `stream` package.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

# Labels Prometheus adds to scraped series (job, instance; namespace, pod, service, endpoint and
# container under the Prometheus Operator's Kubernetes discovery), and series it makes up per target.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})
SYNTHETIC_SERIES: dict[str, frozenset[str]] = {
    name: frozenset() for name in (
        "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    )
}
# Prometheus's own series of pending and firing alerts: alertname, alertstate, the rules' labels
# (deploy/prometheus/rules/kpi-alerts.yml) and the labels their expressions keep.
SYNTHETIC_SERIES["ALERTS"] = frozenset({"alertname", "alertstate", "severity", "service", "scope", "scope_id",
                                        "topic", "partition", "kpi", "kind"})
BUILTIN_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
                     "__interval_ms": "60000", "__range_ms": "3600000"}

AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"})


# -- exposition -----------------------------------------------------------------------------------


@dataclass
class Exposition:
    """Series names (with _total/_bucket/... suffixes) -> label names, and the label sets seen."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def parse_exposition(text: str) -> Exposition:
    out = Exposition()
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            out.labels.setdefault(family.name + suffix, set())
            out.samples.setdefault(family.name + suffix, [])
        for sample in family.samples:
            out.labels.setdefault(sample.name, set()).update(sample.labels)
            out.samples.setdefault(sample.name, []).append(dict(sample.labels))
    return out


def exported_series(exposition_text: str) -> dict[str, set[str]]:
    """Metric (series) name -> label names, from a Prometheus text exposition."""
    return {name: set(labels) for name, labels in parse_exposition(exposition_text).labels.items()}


DEFAULT_EXPORT_SCOPES = ("global", "region", "territory")
# the `window` labels of calendar periods with the default KPI_PERIODS (day, week, month, quarter)
DEFAULT_ALIAS_WINDOWS = ("today", "wtd", "mtd", "qtd", "lmtd")


def default_metrics_text(export_scopes: tuple[str, ...] = DEFAULT_EXPORT_SCOPES) -> str:
    """What a worker with default settings exports once data has flowed: processor metrics with
    labelled samples, KPI gauges for the scopes each KPI family has (spec section 2) restricted
    to `export_scopes` (KPI_EXPORT_SCOPES; default global, region, territory), with the rolling
    windows and the to-date aliases and lmtd (spec 8), and target gauges (spec 9) for targets set
    per territory and rep (and a few others)."""
    from stream.core.kpis import KpiValue
    from stream.core.targets import NOT_PROJECTED
    from stream.worker.metrics import RepTerritoryOutlets, build_processor_metrics
    from stream.worker.sinks import KpiGauges

    metrics = build_processor_metrics()
    for topic, types in (("sales.outlets", ("outlet.onboarded", "outlet.updated")), ("sales.orders", ("order.placed", "order.cancelled", "order.returned")),
                         ("sales.visits", ("visit.completed", "visit.planned")),
                         ("sales.leads", ("lead.created", "lead.updated", "lead.won", "lead.lost")),
                         ("sales.activities", ("activity.logged",)), ("sales.events", ("order.placed", "invalid"))):
        for event_type in types:
            metrics.events_in.labels(topic, event_type).inc(10)
    for reason in ("malformed_json", "missing_field", "bad_value", "future_event"):
        metrics.deadletters.labels(reason).inc()
    for reason in ("duplicate", "already_closed", "duplicate_order"):
        metrics.ignored.labels(reason).inc()
    for family in ("outlet", "lead", "activity"):
        metrics.late_corrections.labels(family).inc()
    for topic in ("sales.orders", "sales.leads", "kpi-stream-scope-partials"):
        for partition in ("0", "1"):
            metrics.consumer_lag.labels(topic, partition).set(3)
            metrics.partition_stalled.labels(topic, partition).set(0)
    metrics.publish_latency.observe(0.4)
    for kind in ("outlet", "lead", "scope"):
        metrics.state_entities.labels(kind).set(100)
    metrics.last_publish.set(1_700_000_000)
    metrics.updates_published.inc(50)
    metrics.redis_up.set(1)
    metrics.ready.set(1)

    if "rep" in export_scopes:  # as the worker registers it (stream/worker/app.py): two partitions
        partitions = [{("JKT-01", "r1"): 3, ("JKT-01", "r2"): 1}, {("JKT-01", "r1"): 2, ("SBY-02", "r2"): 4}]
        metrics.registry.register(RepTerritoryOutlets(lambda: iter(partitions)))
    gauges = KpiGauges(metrics.registry, export_scopes)
    reps = [("rep", "r1"), ("rep", "r2")]
    outlet_scopes = [("global", "all"), ("region", "north"), ("region", "south"),
                     ("territory", "JKT-01"), ("territory", "SBY-02")] + reps
    lead_scopes = [("global", "all"), ("region", "north"), ("region", "unassigned")] + reps
    activity_scopes = [("global", "all")] + reps
    families = (
        (outlet_scopes, ("active_accounts", "dormant_accounts", "reactivated_accounts", "orders", "sales_amount",
                         "average_order_value", "lines_per_order", "visits", "productive_visits",
                         "visit_to_order_ratio")),
        (lead_scopes, ("new_leads", "win_rate", "avg_deal_size", "avg_sales_cycle_days", "pipeline_velocity")),
        # field execution (spec 10); retention has period values only, not exported here
        (outlet_scopes, ("planned_calls", "calls_on_plan", "call_compliance", "unplanned_visits", "new_outlets",
                         "visited_outlets", "coverage", "active_rate", "avg_visit_minutes", "returns",
                         "returned_amount", "net_sales_amount")),
    )
    for window in ("7d", "30d", "60d") + DEFAULT_ALIAS_WINDOWS:
        for scopes, kpis in families:
            for kpi in kpis:
                if window in DEFAULT_ALIAS_WINDOWS and kpi == "dormant_accounts":
                    continue  # rolling only (spec 8)
                for scope, scope_id in scopes:
                    gauges.set(KpiValue(kpi, window, scope, scope_id, 1.0))
        for scope, scope_id in outlet_scopes:
            for horizon in ("7d", "14d", "30d"):
                gauges.set(KpiValue("first_order_conversion", window, scope, scope_id, 0.5, 1, 2, horizon=horizon))
        for scope, scope_id in activity_scopes:
            for kind in ("call", "email", "meeting", "demo", "all"):
                gauges.set(KpiValue("activities", window, scope, scope_id, 4, kind=kind))
    # targets (spec 9), current periods only (their aliases: no lmtd): as the generator sets them,
    # per territory and rep, plus a global activities target (a kind label) and a region new_leads one
    targets = [(kpi, scope, None) for scope in ("territory", "rep")
               for kpi in ("active_accounts", "orders", "sales_amount", "visits")]
    targets += [("activities", "global", "all"), ("activities", "rep", "all"), ("new_leads", "region", None)]
    for kpi, scope_type, kind in targets:
        for scope, scope_id in outlet_scopes + lead_scopes + activity_scopes:
            if scope != scope_type:
                continue
            for window in ("today", "wtd", "mtd", "qtd"):
                gauges.set(KpiValue(kpi + "_target", window, scope, scope_id, 100, kind=kind))
                gauges.set(KpiValue(kpi + "_attainment", window, scope, scope_id, 0.8, 80, 100, kind=kind))
                if kpi not in NOT_PROJECTED:
                    gauges.set(KpiValue(kpi + "_projected", window, scope, scope_id, 95, kind=kind))
                    gauges.set(KpiValue(kpi + "_projected_attainment", window, scope, scope_id, 0.95, 95, 100,
                                        kind=kind))
    for scope, scope_id in outlet_scopes:
        gauges.set(KpiValue("registered_outlets", None, scope, scope_id, 40))
    for scope, scope_id in lead_scopes:
        gauges.set(KpiValue("open_leads", None, scope, scope_id, 7))
        gauges.set(KpiValue("avg_open_lead_age_days", None, scope, scope_id, 3.5, 24.5, 7))
    return generate_latest(metrics.registry).decode()


# -- PromQL tokens --------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![A-Za-z0-9_:.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
""", re.X)


@dataclass(frozen=True)
class Token:
    kind: str
    value: str


def tokenize(expr: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind in ("ws", "comment"):
            continue
        tokens.append(Token(kind, match.group()))
    return tokens


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return bytes(text[1:-1], "utf-8").decode("unicode_escape")


@dataclass
class Selector:
    metric: str | None
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value)


@dataclass
class ParsedQuery:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    result_labels: set[str] | None = None  # known when the outermost operation is an aggregation
    added_labels: set[str] = field(default_factory=set)  # destination labels of label_replace/label_join


def _read_matchers(tokens: list[Token], i: int) -> tuple[list[tuple[str, str, str]], int]:
    """tokens[i] is '{'; returns the matchers and the index after '}'."""
    matchers, i = [], i + 1
    while tokens[i].value != "}":
        if tokens[i].value == ",":
            i += 1
            continue
        name, op, value = tokens[i], tokens[i + 1], tokens[i + 2]
        if name.kind not in ("ident", "string") or op.value not in ("=", "!=", "=~", "!~") or value.kind != "string":
            raise ValueError(f"bad label matcher near {name.value!r} {op.value!r} {value.value!r}")
        label = name.value if name.kind == "ident" else _unquote(name.value)
        matchers.append((label, op.value, _unquote(value.value)))
        i += 3
    return matchers, i + 1


def _read_label_list(tokens: list[Token], i: int) -> tuple[list[str], int]:
    """tokens[i] is '('; returns the label names and the index after ')'."""
    labels, i = [], i + 1
    while tokens[i].value != ")":
        if tokens[i].kind in ("ident", "string"):
            labels.append(tokens[i].value if tokens[i].kind == "ident" else _unquote(tokens[i].value))
        i += 1
    return labels, i + 1


def _argument(tokens: list[Token], i: int, n: int) -> list[Token]:
    """tokens[i] is a call's '('; the tokens of its `n`th argument (from 0)."""
    args: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens[i + 1:]:
        if tok.value in ("(", "[", "{"):
            depth += 1
        elif tok.value in (")", "]", "}"):
            if depth == 0:
                break
            depth -= 1
        elif tok.value == "," and depth == 0:
            args.append([])
            continue
        args[-1].append(tok)
    return args[n] if n < len(args) else []


def _closing_paren(tokens: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].value == "(":
            depth += 1
        elif tokens[j].value == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced parentheses")


def parse_promql(expr: str) -> ParsedQuery:
    tokens = tokenize(expr)
    query = ParsedQuery()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1].value if i + 1 < len(tokens) else None
        if tok.kind == "ident":
            word = tok.value
            if word in GROUPING:
                if nxt == "(":
                    labels, i = _read_label_list(tokens, i + 1)
                    query.grouping.update(labels)
                else:
                    i += 1
                continue
            if word in KEYWORDS or word.lower() in ("inf", "nan"):
                i += 1
                continue
            if nxt == "(" or (word in AGGREGATIONS and nxt in ("by", "without")):
                query.functions.add(word)
                if word in ("label_replace", "label_join"):
                    destination = _argument(tokens, i + 1, 1)
                    if destination and destination[0].kind == "string":
                        query.added_labels.add(_unquote(destination[0].value))
                i += 1
                continue
            selector = Selector(word)
            i += 1
            if nxt == "{":
                selector.matchers, i = _read_matchers(tokens, i)
            query.selectors.append(selector)
            continue
        if tok.value == "{":
            matchers, i = _read_matchers(tokens, i)
            names = [v for (label, op, v) in matchers if label == "__name__" and op == "="]
            query.selectors.append(Selector(names[0] if names else None, matchers))
            continue
        if tok.value == "[":
            while tokens[i].value != "]":
                i += 1
        i += 1
    query.result_labels = _outer_aggregation_labels(tokens)
    return query


def _outer_aggregation_labels(tokens: list[Token]) -> set[str] | None:
    """Labels kept by `agg by (...) (...)` / `agg (...) by (...)` when it is the whole expression
    (or the first operand of a binary operation between aggregations); None when unknown."""
    if len(tokens) < 2 or tokens[0].kind != "ident" or tokens[0].value not in AGGREGATIONS:
        return None
    if tokens[1].value in ("by", "without") and tokens[2].value == "(":
        labels, _ = _read_label_list(tokens, 2)
        return set(labels) if tokens[1].value == "by" else None
    if tokens[1].value == "(":
        end = _closing_paren(tokens, 1)
        if end + 1 < len(tokens) and tokens[end + 1].value == "by":
            labels, _ = _read_label_list(tokens, end + 2)
            return set(labels)
        if end + 1 < len(tokens) and tokens[end + 1].value == "without":
            return None
        return set()
    return None


# -- dashboards -----------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*)\s*,\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def load_dashboards(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]


def _variable_values(dashboard: dict) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name = var.get("name")
        if var.get("type") == "custom":
            options = [o["value"] for o in var.get("options", []) if "value" in o]
            values[name] = options or [v.strip() for v in str(var.get("query", "")).split(",") if v.strip()]
        elif var.get("type") in ("constant", "textbox"):
            values[name] = [str(var.get("query", ""))]
        else:  # query, datasource, interval...: what "All" selects
            values[name] = [var.get("allValue") or ".*"]
    return values


def expand(expr: str, variables: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Every expansion of the Grafana variables in `expr` (custom variables: each option)."""
    names = []
    for match in _VARIABLE.finditer(expr):
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in names:
            names.append(name)
    unknown = [n for n in names if n not in variables and n not in BUILTIN_VARIABLES]
    choices = [variables.get(n) or [BUILTIN_VARIABLES.get(n, "")] for n in names]
    expansions = []
    for combo in itertools.product(*choices):
        chosen = dict(zip(names, combo))
        expansions.append(_VARIABLE.sub(lambda m: chosen[m.group(1) or m.group(2) or m.group(3)], expr))
    return expansions, unknown


def iter_panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def iter_queries(dashboard: dict) -> Iterator[tuple[str, str, str]]:
    """(where, expr, legendFormat) for every Prometheus target of every panel, and every
    Prometheus annotation query (its legend: titleFormat and textFormat)."""
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if (annotation.get("datasource") or {}).get("type") == "prometheus" and annotation.get("expr"):
            where = f"{dashboard.get('title')!r} / annotation {annotation.get('name')!r}"
            yield where, annotation["expr"], f"{annotation.get('titleFormat', '')} {annotation.get('textFormat', '')}"
    for panel in iter_panels(dashboard):
        for t in panel.get("targets", []):
            if "expr" in t:
                where = f"{dashboard.get('title')!r} / panel {panel.get('title')!r} / {t.get('refId')}"
                yield where, t["expr"], t.get("legendFormat", "")


def iter_variable_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            yield f"{dashboard.get('title')!r} / variable ${var.get('name')}", text


def selected_metrics(dashboard: dict) -> set[str]:
    """Names of the metrics the dashboard's panel queries select (variables expanded)."""
    variables = _variable_values(dashboard)
    names = set()
    for _where, expr, _legend in iter_queries(dashboard):
        for expanded in expand(expr, variables)[0]:
            names |= {s.metric for s in parse_promql(expanded).selectors if s.metric}
    return names


def _regex_full(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return False


def _matches(sample: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, value in matchers:
        if label in TARGET_LABELS or label == "__name__":
            continue
        have = sample.get(label, "")
        ok = {"=": have == value, "!=": have != value,
              "=~": _regex_full(value, have), "!~": not _regex_full(value, have)}[op]
        if not ok:
            return False
    return True


def _check_expr(where: str, expr: str, legend: str, exposition: Exposition) -> list[str]:
    problems = []
    try:
        query = parse_promql(expr)
    except (ValueError, IndexError) as error:
        return [f"{where}: cannot parse {expr!r}: {error}"]
    available: set[str] = set(TARGET_LABELS) | query.added_labels
    labels_unknown = False  # a labelled metric with no samples yet shows no label names
    for sel in query.selectors:
        name_regex = [v for (label, op, v) in sel.matchers if label == "__name__" and op == "=~"]
        if sel.metric is None and name_regex:
            # {__name__=~"kpi_.+_projected_attainment", ...}: the exported metrics the regex names,
            # checked as one metric with their labels and samples together
            names = sorted(n for n in exposition.labels if _regex_full(name_regex[0], n))
            if not names:
                problems.append(f"{where}: no exported metric matches __name__=~{name_regex[0]!r}")
                labels_unknown = True
                continue
            metric = f"__name__=~{name_regex[0]!r}"
            labels = set().union(*(exposition.labels[n] for n in names))
            samples = [s for n in names for s in exposition.samples.get(n, [])]
            synthetic = False
        elif sel.metric is None:
            problems.append(f"{where}: selector without a metric name in {expr!r}")
            continue
        elif sel.metric in SYNTHETIC_SERIES:
            metric, labels, samples, synthetic = sel.metric, set(SYNTHETIC_SERIES[sel.metric]), [], True
        elif sel.metric in exposition.labels:
            metric, labels, samples = sel.metric, exposition.labels[sel.metric], exposition.samples.get(sel.metric, [])
            synthetic = False
        else:
            problems.append(f"{where}: metric {sel.metric!r} is not exported")
            labels_unknown = True
            continue
        available |= labels
        if not synthetic and not samples:
            labels_unknown = True
            continue
        for label, _op, _value in sel.matchers:
            if label not in labels and label not in TARGET_LABELS and label != "__name__":
                problems.append(f"{where}: metric {metric!r} has no label {label!r} "
                                f"(it has {sorted(labels) or 'none'})")
        if not synthetic and not any(_matches(s, sel.matchers) for s in samples):
            shown = ", ".join(f"{n}{op}{v!r}" for n, op, v in sel.matchers if n != "__name__")
            problems.append(f"{where}: {sel.metric or metric}{{{shown}}} matches no exported series")
    if labels_unknown:
        return problems
    for label in sorted(query.grouping - available):
        problems.append(f"{where}: grouping label {label!r} is not a label of the selected metrics")
    legend_allowed = available if query.result_labels is None else query.result_labels
    for label in _LEGEND_LABEL.findall(legend or ""):
        if label not in legend_allowed:
            problems.append(f"{where}: legend uses {{{{{label}}}}} which the query result does not carry")
    return problems


def check_expression(where: str, expr: str, exposition_text: str, legend: str = "") -> list[str]:
    """Problems of one PromQL expression (no Grafana variables) against the exposition."""
    return _check_expr(where, expr, legend, parse_exposition(exposition_text))


def check_dashboard_queries(dashboards: Iterable[dict | str | Path], exposition_text: str) -> list[str]:
    """Problems of every panel and variable query of `dashboards` (dashboard JSON objects or
    paths to them) against the exposition. A labelled metric without samples yet (e.g. no dead
    letter so far) is checked by name only: the exposition does not show its label names."""
    exposition = parse_exposition(exposition_text)
    problems: list[str] = []
    for dashboard in dashboards:
        if isinstance(dashboard, (str, Path)):
            dashboard = json.loads(Path(dashboard).read_text(encoding="utf-8"))
        variables = _variable_values(dashboard)
        for where, expr, legend in iter_queries(dashboard):
            expansions, unknown = expand(expr, variables)
            problems += [f"{where}: unknown variable ${name}" for name in unknown]
            for expanded in expansions:
                problems += _check_expr(where, expanded, legend, exposition)
        for where, text in iter_variable_queries(dashboard):
            match = _LABEL_VALUES.match(text)
            if not match:
                problems.append(f"{where}: only label_values(...) variable queries are checked: {text!r}")
                continue
            selector, label = match.group(1), match.group(2)
            if not selector:
                continue
            expansions, unknown = expand(selector, variables)
            problems += [f"{where}: unknown variable ${name}" for name in unknown]
            for expanded in expansions:
                problems += _check_expr(where, expanded, "", exposition)
                for sel in parse_promql(expanded).selectors:
                    if sel.metric not in SYNTHETIC_SERIES and not exposition.samples.get(sel.metric):
                        continue  # not exported (reported above) or no samples yet: labels unknown
                    labels = set(SYNTHETIC_SERIES.get(sel.metric, ())) | exposition.labels.get(sel.metric, set())
                    if label not in labels | TARGET_LABELS:
                        problems.append(f"{where}: label_values label {label!r} is not a label of {sel.metric!r}")
    return sorted(set(problems), key=problems.index)


def check_dashboard_structure(dashboard: dict, datasource_uids: set[str] | None = None) -> list[str]:
    """The shape Grafana's provisioning needs: uid, title, panels with ids, grid positions,
    a Prometheus datasource and at least one target with refId and expr."""
    problems = []
    title = dashboard.get("title")
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid or ""):
        problems.append(f"{title!r}: uid must be 1-40 characters of [A-Za-z0-9_-], got {uid!r}")
    if not isinstance(title, str) or not title:
        problems.append("dashboard without a title")
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append(f"{title!r}: schemaVersion missing")
    if not isinstance(dashboard.get("panels"), list) or not dashboard["panels"]:
        problems.append(f"{title!r}: no panels")
        return problems
    ids = [p.get("id") for p in iter_panels(dashboard)]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        problems.append(f"{title!r}: panel ids must be unique integers")
    for panel in iter_panels(dashboard):
        where = f"{title!r} / panel {panel.get('title')!r}"
        if not panel.get("type") or not panel.get("title"):
            problems.append(f"{where}: needs type and title")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"{where}: bad gridPos {grid}")
        if panel.get("type") == "row":
            continue
        ds = panel.get("datasource")
        if not isinstance(ds, dict) or ds.get("type") != "prometheus" or not ds.get("uid"):
            problems.append(f"{where}: needs a prometheus datasource with a uid, got {ds!r}")
        elif datasource_uids is not None and ds["uid"] not in datasource_uids:
            problems.append(f"{where}: datasource uid {ds['uid']!r} is not provisioned")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or not all(refs):
            problems.append(f"{where}: target refIds must be unique and set")
        for t in targets:
            if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                problems.append(f"{where}: target {t.get('refId')} has no expr")
    for var in dashboard.get("templating", {}).get("list", []):
        if not var.get("name") or not var.get("type"):
            problems.append(f"{title!r}: template variable needs name and type: {var}")
        if var.get("type") == "query" and not isinstance(var.get("datasource"), dict):
            problems.append(f"{title!r}: query variable ${var.get('name')} needs a datasource")
    return problems


def promql_syntax_problems(exprs: Iterable[tuple[str, str]], promtool: str) -> list[str]:
    """Parse each (where, expr) with the real PromQL parser: `promtool check rules` on recording
    rules made of them."""
    exprs = list(exprs)
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_where, expr) in enumerate(exprs)]}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard-queries.yml"
        path.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    if result.returncode == 0:
        return []
    output = result.stdout + result.stderr
    problems = []
    for i, (where, expr) in enumerate(exprs):
        if f'query_{i}"' in output or f"rule {i + 1}," in output:
            problems.append(f"{where}: promtool rejects {expr!r}")
    return problems or [f"promtool check rules failed: {output.strip()}"]

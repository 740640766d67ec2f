"""Deployment files: the Kubernetes manifests in deploy/k8s (shape of each kind by a small
hand-written JSON Schema, and the cross-references between them), the PrometheusRule against the
rules file, and the container files (Dockerfile, .dockerignore, docker-compose.yml).

No cluster and no network: only PyYAML and jsonschema.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from stream.cli import build_parser
from stream.core.config import DEFAULT_OPEN_PAGES, SETTINGS_DOC

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "kpi-alerts.yml"
SETTING_NAMES = {name for name, _default, _meaning in SETTINGS_DOC}
SECRET_SETTINGS = {"KAFKA_PASSWORD", "REDIS_PASSWORD", "KPI_API_TOKENS"}
STATE_DIR = "/var/lib/kpi-stream"
WEB_PORT = 6066


# -- loading -----------------------------------------------------------------------------------------


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    """Every object applied by `kubectl apply -k deploy/k8s`."""
    docs = []
    for name in _kustomization()["resources"]:
        docs += _documents(K8S / name)
    return docs


def _one(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _render_rules_module():
    name = "kpi_stream_render_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "prometheus" / "render_rules.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- hand-written schemas of the kinds used ----------------------------------------------------------

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": _NAME, "labels": _LABELS, "annotations": _LABELS},
    "not": {"required": ["namespace"]},  # namespace-less manifests
}
_SELECTOR = {"type": "object", "required": ["matchLabels"], "properties": {"matchLabels": _LABELS}}
_PORT_REF = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "string", "pattern": r"^[a-z0-9-]{1,15}$"}]}
_PROBE = {
    "type": "object", "required": ["httpGet"],
    "properties": {"httpGet": {"type": "object", "required": ["path", "port"],
                               "properties": {"path": {"type": "string"}, "port": _PORT_REF}},
                   "periodSeconds": {"type": "integer", "minimum": 1},
                   "timeoutSeconds": {"type": "integer", "minimum": 1},
                   "failureThreshold": {"type": "integer", "minimum": 1}},
}
_QUANTITY = {"oneOf": [{"type": "string", "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti|k|M|G)?$"}, {"type": "number"}]}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources", "livenessProbe", "readinessProbe", "ports", "securityContext"],
    "properties": {
        "name": _NAME, "image": {"type": "string", "minLength": 1},
        "args": {"type": "array", "items": {"type": "string"}},
        "ports": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["containerPort"],
            "properties": {"name": {"type": "string"}, "containerPort": {"type": "integer"}}}},
        "envFrom": {"type": "array", "items": {"type": "object", "minProperties": 1}},
        "resources": {"type": "object", "required": ["requests", "limits"], "properties": {
            "requests": {"type": "object", "required": ["cpu", "memory"], "additionalProperties": _QUANTITY},
            "limits": {"type": "object", "required": ["memory"], "additionalProperties": _QUANTITY}}},
        "livenessProbe": _PROBE, "readinessProbe": _PROBE, "startupProbe": _PROBE,
        "securityContext": {"type": "object", "required": ["allowPrivilegeEscalation"],
                            "properties": {"allowPrivilegeEscalation": {"const": False}}},
    },
}
SCHEMAS: dict[tuple[str, str], dict] = {
    ("apps/v1", "StatefulSet"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["serviceName", "replicas", "selector", "template", "volumeClaimTemplates"],
            "properties": {
                "serviceName": _NAME, "replicas": {"type": "integer", "minimum": 1}, "selector": _SELECTOR,
                "template": {"type": "object", "required": ["metadata", "spec"], "properties": {
                    "metadata": {"type": "object", "required": ["labels"], "properties": {"labels": _LABELS}},
                    "spec": {"type": "object", "required": ["containers", "securityContext"], "properties": {
                        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                        "securityContext": {"type": "object", "required": ["runAsNonRoot"],
                                            "properties": {"runAsNonRoot": {"const": True},
                                                           "runAsUser": {"type": "integer", "minimum": 1}}}}}}},
                "volumeClaimTemplates": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["metadata", "spec"],
                    "properties": {"spec": {"type": "object", "required": ["accessModes", "resources"]}}}}}}},
    },
    ("v1", "Service"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "ports"],
            "properties": {"selector": _LABELS, "ports": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "port", "targetPort"],
                "properties": {"port": {"type": "integer"}, "targetPort": _PORT_REF}}}}}},
    },
    ("policy/v1", "PodDisruptionBudget"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "maxUnavailable"],
            "properties": {"selector": _SELECTOR, "maxUnavailable": {"const": 1}}}},
    },
    ("v1", "ConfigMap"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "data"],
        "properties": {"metadata": _METADATA, "data": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    ("v1", "Secret"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "stringData"],
        "properties": {"metadata": _METADATA, "stringData": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "properties": {"selector": _SELECTOR, "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["port", "path"]}}}}},
    },
    ("networking.k8s.io/v1", "NetworkPolicy"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["podSelector", "policyTypes", "ingress"],
            "properties": {
                "podSelector": _SELECTOR,
                "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                "ingress": {"type": "array", "items": {
                    "type": "object", "required": ["from", "ports"], "additionalProperties": False,
                    "properties": {
                        "from": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "minProperties": 1, "additionalProperties": False,
                            "properties": {"podSelector": _SELECTOR, "namespaceSelector": _SELECTOR,
                                           "ipBlock": {"type": "object", "required": ["cidr"]}}}},
                        "ports": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["port"],
                            "properties": {"port": _PORT_REF, "protocol": {"enum": ["TCP"]}}}}}}}}}},
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"],
                "properties": {"rules": {"type": "array", "items": {
                    "type": "object", "required": ["expr"],
                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}]}}}}}}}},
    },
}


# -- every manifest ----------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = set(_kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}
    assert "namespace" not in _kustomization()


def test_every_manifest_has_api_version_kind_and_name_and_matches_its_schema(manifests):
    for doc in manifests + _documents(K8S / "secret.example.yaml"):
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
        schema = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        assert schema is not None, f"no schema for {doc['apiVersion']} {doc['kind']}"
        jsonschema.validate(doc, schema)


def test_a_schema_rejects_a_container_without_probes(manifests):
    sts = yaml.safe_load(yaml.safe_dump(_one(manifests, "StatefulSet")))
    del sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sts, SCHEMAS[("apps/v1", "StatefulSet")])


# -- the StatefulSet ---------------------------------------------------------------------------------


def test_statefulset_worker_container(manifests):
    sts = _one(manifests, "StatefulSet", "kpi-stream")
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": WEB_PORT}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = container[probe]["httpGet"]["port"]
        assert port in ports or port in ports.values(), probe
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["args"] == ["worker"]


def test_statefulset_state_volume_is_the_state_dir(manifests):
    sts = _one(manifests, "StatefulSet")
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts.get(STATE_DIR) in claims
    config = _one(manifests, "ConfigMap", "kpi-stream-config")["data"]
    assert config["KPI_STATE_DIR"] == STATE_DIR
    assert int(config["KPI_WEB_PORT"]) == WEB_PORT


def test_env_comes_from_the_configmap_and_the_secret(manifests):
    sts = _one(manifests, "StatefulSet")
    sources = sts["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    config_maps = [s["configMapRef"]["name"] for s in sources if "configMapRef" in s]
    secrets = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
    assert config_maps == ["kpi-stream-config"]
    _one(manifests, "ConfigMap", "kpi-stream-config")
    (secret_example,) = _documents(K8S / "secret.example.yaml")
    assert secrets == [secret_example["metadata"]["name"]]


def test_each_pod_joins_the_group_as_itself_for_longer_than_a_restart(manifests):
    """Static membership (KPI_GROUP_INSTANCE_ID): unique per pod and stable across its restarts --
    the pod name -- and a session timeout that outlasts a stop with snapshots plus a start."""
    sts = _one(manifests, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["KPI_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config = _one(manifests, "ConfigMap", "kpi-stream-config")["data"]
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert float(config["KPI_SESSION_TIMEOUT"]) >= grace, "a stop that uses its grace period must not cost the partitions"
    assert set(env) <= SETTING_NAMES


def test_configmap_holds_only_known_non_secret_settings(manifests):
    data = _one(manifests, "ConfigMap", "kpi-stream-config")["data"]
    assert set(data) <= SETTING_NAMES, f"unknown settings: {sorted(set(data) - SETTING_NAMES)}"
    assert not set(data) & SECRET_SETTINGS
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "KPI_PARTITIONS"} <= set(data)


def test_replicas_do_not_exceed_partitions(manifests):
    sts = _one(manifests, "StatefulSet")
    partitions = int(_one(manifests, "ConfigMap")["data"]["KPI_PARTITIONS"])
    assert 1 <= sts["spec"]["replicas"] <= partitions


def test_secret_example_holds_placeholders_only():
    (secret,) = _documents(K8S / "secret.example.yaml")
    assert set(secret["stringData"]) == SECRET_SETTINGS
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    assert "data" not in secret


# -- Services, PDB, ServiceMonitor -------------------------------------------------------------------


def test_services_select_the_worker_pods(manifests):
    sts = _one(manifests, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = [m for m in manifests if m["kind"] == "Service"]
    assert services
    for svc in services:
        assert svc["spec"]["selector"].items() <= pod_labels.items(), svc["metadata"]["name"]
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names or port["targetPort"] == WEB_PORT
    governing = _one(manifests, "Service", sts["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"


def test_pdb_selects_the_statefulset_pods(manifests):
    sts = _one(manifests, "StatefulSet")
    pdb = _one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_servicemonitor_scrapes_exactly_one_service_with_job_kpi_stream(manifests):
    monitor = _one(manifests, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    matched = [m for m in manifests if m["kind"] == "Service" and wanted.items() <= m["metadata"]["labels"].items()]
    assert [m["metadata"]["name"] for m in matched] == ["kpi-stream"]  # job label = Service name
    port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


# -- NetworkPolicy and the API's access ------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


def test_network_policy_admits_only_prometheus_and_declared_consumers_to_the_worker_port(manifests):
    sts = _one(manifests, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    assert policies, "no NetworkPolicy: any pod could read /kpi"
    (policy,) = [p for p in policies if _selects(p["spec"]["podSelector"], pod_labels)]
    assert policy["spec"]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert "Ingress" in policy["spec"]["policyTypes"]
    sources = []
    for rule in policy["spec"]["ingress"]:
        # each rule names the worker's port (by name or number) and who may use it: never "anyone"
        assert {p["port"] for p in rule["ports"]} <= {"http", WEB_PORT}, rule
        assert rule["from"], "an empty `from` admits everyone"
        for peer in rule["from"]:
            assert "ipBlock" not in peer, "address ranges admit whole hosts and nodes"
            assert peer.get("podSelector", {}).get("matchLabels"), f"a peer without pod labels admits every pod: {peer}"
            if "namespaceSelector" in peer:
                assert peer["namespaceSelector"].get("matchLabels"), "an empty namespaceSelector admits every namespace"
            sources.append(peer)
    prometheus = [p for p in sources if p["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "prometheus"]
    consumers = [p for p in sources if p["podSelector"]["matchLabels"] == {"kpi-stream/api-client": "true"}]
    assert len(prometheus) == 1 and "namespaceSelector" in prometheus[0]
    assert len(consumers) == 1 and "namespaceSelector" not in consumers[0]  # the policy's own namespace
    assert len(sources) == 2, sources
    # the worker pods themselves are not admitted (they never call each other over HTTP)
    assert not any(_selects(p["podSelector"], pod_labels) for p in sources)


def test_probes_and_scrapes_reach_pages_open_without_a_token(manifests):
    """With KPI_API_TOKENS in the Secret, the kubelet (no token) and the ServiceMonitor (no
    bearerTokenSecret) must only use pages KPI_API_OPEN_PAGES keeps open."""
    config = _one(manifests, "ConfigMap", "kpi-stream-config")["data"]
    open_pages = {p.strip() for p in config.get("KPI_API_OPEN_PAGES", ",".join(DEFAULT_OPEN_PAGES)).split(",")}
    (container,) = _one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in open_pages, probe
    for endpoint in _one(manifests, "ServiceMonitor")["spec"]["endpoints"]:
        assert endpoint["path"] in open_pages or "bearerTokenSecret" in endpoint


# -- PrometheusRule ----------------------------------------------------------------------------------


def test_prometheusrule_groups_equal_the_rules_file(manifests):
    rule = _one(manifests, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def test_prometheusrule_file_is_what_render_rules_writes():
    render = _render_rules_module()
    assert (K8S / "prometheusrule.yaml").read_text(encoding="utf-8") == render.render_prometheus_rule(), (
        "deploy/k8s/prometheusrule.yaml is out of date: run python deploy/prometheus/render_rules.py")


# -- container files ---------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile():
    instructions = _dockerfile_instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM"):]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", str(WEB_PORT)) in final
    healthchecks = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/health" in healthchecks[0]
    assert ("ENTRYPOINT", '["kpi-stream"]') in final
    assert ("CMD", '["worker"]') in final
    # the package with its rocksdb extra, so KPI_STORE=rocksdb:// (configmap) works in the image
    assert any(kw == "RUN" and 'pip install ".[rocksdb]"' in rest for kw, rest in instructions)


def test_dockerignore_keeps_the_context_small_and_secret_free():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", ".env"} <= patterns
    assert not {"stream", "pyproject.toml", "README.md"} & patterns


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_services(compose):
    services = compose["services"]
    assert {"kafka", "redis", "generator", "prometheus", "grafana"} <= set(services)
    workers = [name for name, svc in services.items() if svc.get("command") == ["worker"]]
    assert len(workers) >= 2 or any(svc.get("deploy", {}).get("replicas", 1) >= 2 for svc in services.values())
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    generator = build_parser().parse_args(services["generator"]["command"])
    # live traffic: the workers run on the wall clock, so fixed-period history would fall out of every window
    assert generator.command == "generate" and generator.live and generator.kafka == "kafka:9092"


def test_compose_kafka_is_single_node_kraft(compose):
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    assert base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==").__len__() == 16  # Kafka Uuid
    for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        assert listener.split("://")[0] in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]


def test_compose_worker_env_uses_known_settings_and_no_literal_secrets(compose):
    for name, svc in compose["services"].items():
        if svc.get("command") != ["worker"]:
            continue
        env = svc["environment"]
        assert set(env) <= SETTING_NAMES, f"{name}: unknown settings {sorted(set(env) - SETTING_NAMES)}"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["REDIS_URL"].startswith("redis://redis:")
    instance_ids = [svc["environment"].get("KPI_GROUP_INSTANCE_ID") for svc in compose["services"].values()
                    if svc.get("command") == ["worker"]]
    assert all(instance_ids) and len(set(instance_ids)) == len(instance_ids), instance_ids  # unique per worker
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:-\}", str(value)), f"{name}.{key} must be ${{VAR:-}}"


def test_compose_mounts_exist_and_prometheus_targets_are_the_workers(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    prom_mounts = [v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"]]
    assert ["./deploy/prometheus", "/etc/prometheus"] in prom_mounts
    targets = yaml.safe_load((ROOT / "deploy" / "prometheus" / "targets" / "kpi-stream.yml").read_text())
    hosts = {t for group in targets for t in group["targets"]}
    workers = {name for name, svc in compose["services"].items() if svc.get("command") == ["worker"]}
    assert hosts == {f"{w}:{WEB_PORT}" for w in workers}


def test_compose_grafana_is_provisioned_with_anonymous_viewers(compose):
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/provider.yml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"

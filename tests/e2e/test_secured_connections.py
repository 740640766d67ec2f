"""Secured connections, configured only through the environment: a real worker reads from a
broker's SASL_SSL listener (SCRAM-SHA-512, a CA made for this test) and writes to a TLS-only Redis
as an ACL user (the `default` user is off). Its values must equal the oracle's, and no password
may show up in its log, its state directory or any page it serves. A wrong Kafka password must
stop the worker with the reason in the log; a wrong Redis password must be visible in the log
and on /ready.

All passwords are made at run time; the broker, Redis and the certificates live in tmp dirs."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from stream.devtools import generator
from stream.core.config import ServiceSettings
from stream.devtools.localstack import KafkaBroker, RedisServer
from stream.devtools.tls import TlsFiles, make_test_tls
from stream.core.timeparse import format_rfc3339_us
from tests.e2e.harness import WorkerProcess, redis_records, unique_names, wait_until, worker_env
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e

WORKER_USER, PRODUCER_USER, REDIS_USER = "kpi-worker", "kpi-producer", "kpi"


@dataclass
class SecuredStack:
    tls: TlsFiles
    broker: KafkaBroker
    redis: RedisServer
    worker_password: str
    producer_password: str
    redis_password: str

    @property
    def passwords(self) -> dict[str, bytes]:
        return {"KAFKA_PASSWORD (worker)": self.worker_password.encode(),
                "KAFKA_PASSWORD (producer)": self.producer_password.encode(),
                "REDIS_PASSWORD": self.redis_password.encode()}

    def kafka_env(self, user: str, password: str) -> dict[str, str]:
        """Everything a client needs to reach the broker, as environment variables only."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.broker.sasl_ssl_bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_USERNAME": user, "KAFKA_PASSWORD": password,
                "KAFKA_SSL_CAFILE": str(self.tls.ca_cert)}

    def worker_env(self, tmp_path: Path, prefix: str, app_id: str, **overrides: str) -> dict[str, str]:
        secured = {**self.kafka_env(WORKER_USER, self.worker_password),
                   "REDIS_URL": self.redis.url, "REDIS_PASSWORD": self.redis_password, **overrides}
        return worker_env(secured.pop("KAFKA_BOOTSTRAP_SERVERS"), secured.pop("REDIS_URL"), prefix, app_id,
                          tmp_path / "state", **secured)

    def redis_client(self):
        import redis

        return redis.Redis.from_url(self.redis.url, password=self.redis_password)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("secured")
    tls = make_test_tls(root / "tls")
    worker_password, producer_password, redis_password = (secrets.token_urlsafe(24) for _ in range(3))
    broker = KafkaBroker(tls=tls, scram_users={WORKER_USER: worker_password, PRODUCER_USER: producer_password},
                         heap="512m").start(root / "kafka")
    try:
        redis = RedisServer(tls=tls, username=REDIS_USER, password=redis_password).start(root / "redis")
    except Exception:
        broker.stop()
        raise
    yield SecuredStack(tls, broker, redis, worker_password, producer_password, redis_password)
    redis.stop()
    broker.stop()


@pytest.fixture(scope="module")
def traffic():
    config = generator.GeneratorConfig(seed=20260512, events=3000, outlets=300)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    return messages, as_of, oracle_kpis([m.value for m in messages], as_of, OracleSettings())


def _ready(worker: WorkerProcess) -> bool | list:
    assert worker.alive(), worker.log_tail()
    status, body = worker.get("/ready")
    return status == 200 or [status, body[:300]]


def _leaks(stack: SecuredStack, texts: dict[str, bytes]) -> list[str]:
    return [f"{secret} in {where}" for where, text in texts.items()
            for secret, value in stack.passwords.items() if value in text]


def test_the_secured_redis_refuses_plaintext_and_its_default_user(stack):
    """What makes the worker test below mean something: no other way in than TLS as the ACL user."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with pytest.raises(redis.ConnectionError):  # the server resets a connection that does not start TLS
        redis.Redis(host="127.0.0.1", port=stack.redis.port, username=REDIS_USER, password=stack.redis_password,
                    socket_timeout=2, retry=Retry(NoBackoff(), 0)).ping()
    without_user = stack.redis.url.replace(f"{REDIS_USER}@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(without_user, password=stack.redis_password).ping()
    assert stack.redis_client().acl_whoami() == REDIS_USER


def test_worker_over_scram_tls_and_redis_acl_tls_publishes_oracle_values(stack, traffic, tmp_path):
    messages, as_of, expected = traffic
    prefix, app_id = unique_names()
    # DEBUG: every library logs what it sends and receives; still no password may appear
    env = stack.worker_env(tmp_path, prefix, app_id, KPI_CLOCK=as_of, KPI_LOG_LEVEL="DEBUG")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: _ready(worker), timeout=90, interval=0.5, what="worker ready")
        producer = ServiceSettings.from_env(stack.kafka_env(PRODUCER_USER, stack.producer_password))
        asyncio.run(generator.produce(messages, producer.kafka_bootstrap, topic_prefix=prefix,
                                      **producer.kafka_client_options()))
        client = stack.redis_client()

        def redis_matches():
            assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(client, prefix), expected)

        wait_until(redis_matches, timeout=120, interval=1, what="Redis values to equal the oracle")

        pages = {}
        for path in ("/metrics", "/health", "/ready", "/kpi"):
            status, body = worker.get(path)
            assert status == 200, (path, body[:300])
            pages[path] = body
        state = orjson.loads(pages["/ready"])
        assert state["kafka"] is True and state["redis"] is True, state
        assert b"kpi_stream_redis_up 1.0" in pages["/metrics"]
    finally:
        worker.stop()

    log = worker.log_path.read_bytes()
    # the worker really authenticated with SCRAM (aiokafka says so once per connection)
    assert f"Authenticated as {WORKER_USER} via SCRAM-SHA-512".encode() in log
    state_files = {str(path): path.read_bytes() for path in (tmp_path / "state").rglob("*") if path.is_file()}
    # the servers' own logs too (the broker got the SCRAM passwords on its format command line)
    server_logs = {str(path): path.read_bytes() for run_dir in (stack.broker.run_dir, stack.redis.run_dir)
                   for path in run_dir.glob("*.log")}
    assert _leaks(stack, {"worker log": log, **pages, **state_files, **server_logs}) == []


@pytest.mark.parametrize("wrong, expected", [
    ("KAFKA_PASSWORD", b"SaslAuthenticationFailed: Authentication failed during authentication due to invalid "
                       b"credentials with SASL mechanism SCRAM-SHA-512"),
    ("KAFKA_SSL_CAFILE", b"CERTIFICATE_VERIFY_FAILED"),  # unset: the system's CAs, which do not know ours
], ids=["wrong-password", "unknown-ca"])
def test_wrong_kafka_credentials_stop_the_worker_with_the_reason_in_its_log(stack, tmp_path, wrong, expected):
    prefix, app_id = unique_names()
    bad = secrets.token_urlsafe(24) if wrong == "KAFKA_PASSWORD" else ""
    worker = WorkerProcess(stack.worker_env(tmp_path, prefix, app_id, **{wrong: bad}), tmp_path / "worker.log").start()
    try:
        wait_until(lambda: not worker.alive() or ["still running", worker.get("/ready")[0]], timeout=45,
                   interval=0.5, what="the worker to give up")
        assert worker.process.returncode == 1
    finally:
        worker.stop()
    log = worker.log_path.read_bytes()
    assert expected in log and b"worker not started" in log, log[-3000:].decode(errors="replace")
    if bad:
        assert bad.encode() not in log
    assert _leaks(stack, {"worker log": log}) == []


@pytest.mark.parametrize("wrong, expected", [
    ("REDIS_PASSWORD", b"AuthenticationError: invalid username-password pair"),
    ("REDIS_URL", b"CERTIFICATE_VERIFY_FAILED"),  # without ssl_ca_certs: the system's CAs
], ids=["wrong-password", "unknown-ca"])
def test_wrong_redis_credentials_are_logged_and_reported_on_ready(stack, tmp_path, wrong, expected):
    prefix, app_id = unique_names()
    bad = secrets.token_urlsafe(24) if wrong == "REDIS_PASSWORD" else stack.redis.url.split("?")[0]
    worker = WorkerProcess(stack.worker_env(tmp_path, prefix, app_id, **{wrong: bad}), tmp_path / "worker.log").start()
    try:
        # Redis down does not make a worker unready: it keeps consuming and catches Redis up later
        wait_until(lambda: _ready(worker), timeout=90, interval=0.5, what="worker ready")
        time.sleep(2.5)  # a Redis check runs every 2 s
        pages = {path: worker.get(path)[1] for path in ("/metrics", "/ready", "/kpi")}
        assert orjson.loads(pages["/ready"])["redis"] is False, pages["/ready"]
        assert b"kpi_stream_redis_up 0.0" in pages["/metrics"]
    finally:
        worker.stop()
    log = worker.log_path.read_bytes()
    assert expected in log, log[-3000:].decode(errors="replace")
    assert log.count(b"redis unreachable") == 1  # once, not every 2 s
    if wrong == "REDIS_PASSWORD":
        assert bad.encode() not in log and not any(bad.encode() in page for page in pages.values())
    assert _leaks(stack, {"worker log": log, **pages}) == []

"""Security settings from the environment: checked when read, never printed, the same for the
worker's Faust app and every other Kafka client, and blanked out of log lines. The real
connections (SCRAM over TLS, a Redis ACL user over TLS) are in tests/e2e/test_secured_connections.py."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys

import pytest

from stream.cli import RedactingFormatter
from stream.core.config import ConfigError, ServiceSettings
from stream.devtools.localstack import KafkaBroker, RedisServer
from stream.devtools.tls import TlsFiles, make_test_tls
from stream.worker.metrics import build_processor_metrics
from stream.worker.sinks import RedisSink

pytestmark = pytest.mark.unit

KAFKA_PW, REDIS_PW = "kafka-pw-6c1d2e", "redis-pw-93fa0b"  # fakes: nothing runs with them
SASL_SSL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_USERNAME": "kpi-worker", "KAFKA_PASSWORD": KAFKA_PW,
            "REDIS_URL": "rediss://kpi@redis:6380/0", "REDIS_PASSWORD": REDIS_PW}


def test_settings_repr_and_str_show_no_password():
    settings = ServiceSettings.from_env(SASL_SSL)
    for text in (repr(settings), str(settings), f"{settings.kafka_password}", repr(settings.redis_password)):
        assert KAFKA_PW not in text and REDIS_PW not in text
    assert "SecretStr('****')" in repr(settings)
    assert settings.kafka_password.value == KAFKA_PW  # the value itself is still there for the clients


@pytest.mark.parametrize("env, complaint", [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL-SSL"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
    ({**SASL_SSL, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"}, "KAFKA_SASL_MECHANISM must be one of"),
    ({**SASL_SSL, "KAFKA_PASSWORD": ""}, "needs KAFKA_USERNAME and KAFKA_PASSWORD"),
    ({**SASL_SSL, "KAFKA_USERNAME": ""}, "needs KAFKA_USERNAME and KAFKA_PASSWORD"),
], ids=["misspelt-protocol", "unknown-mechanism", "no-password", "no-user"])
def test_unusable_kafka_security_settings_are_refused_not_downgraded(env, complaint):
    with pytest.raises(ConfigError, match=complaint) as raised:
        ServiceSettings.from_env(env)
    assert KAFKA_PW not in str(raised.value)


def test_protocol_and_mechanism_are_normalised_and_scram_512_is_the_sasl_default():
    env = {**SASL_SSL, "KAFKA_SECURITY_PROTOCOL": " sasl_ssl ", "KAFKA_SASL_MECHANISM": ""}
    settings = ServiceSettings.from_env(env)
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert ServiceSettings.from_env({}).kafka_client_options() == {}


def test_every_kafka_client_gets_the_same_verified_tls_and_scram_settings_as_the_worker(tmp_path):
    from stream.worker.app import broker_credentials

    ca = make_test_tls(tmp_path).ca_cert
    settings = ServiceSettings.from_env({**SASL_SSL, "KAFKA_SSL_CAFILE": str(ca)})
    options = settings.kafka_client_options()  # admin (topic creation), generator, tail
    faust_credentials = broker_credentials(settings)  # the worker's Faust app
    assert options["security_protocol"] == faust_credentials.protocol.value == "SASL_SSL"
    assert options["sasl_mechanism"] == faust_credentials.mechanism.value == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == faust_credentials.username == "kpi-worker"
    assert options["sasl_plain_password"] == faust_credentials.password == KAFKA_PW
    for context in (options["ssl_context"], faust_credentials.ssl_context):
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kpi-stream test CA"),),)]
    assert KAFKA_PW not in repr(faust_credentials)


def test_secret_values_include_a_password_written_into_redis_url():
    settings = ServiceSettings.from_env({"REDIS_URL": "rediss://kpi:in%2Furl@redis:6380/0", "REDIS_PASSWORD": REDIS_PW})
    assert set(settings.secret_values()) == {REDIS_PW, "in%2Furl", "in/url"}
    assert ServiceSettings.from_env({}).secret_values() == ()


def test_log_lines_and_tracebacks_have_the_secrets_blanked_out():
    formatter = RedactingFormatter((KAFKA_PW, REDIS_PW, ""))
    # what aiokafka logs at DEBUG for a SASL PLAIN login
    record = logging.LogRecord("aiokafka.conn", logging.DEBUG, __file__, 1, "Request to %s: %s", (
        "kafka:9093", f"SaslAuthenticateRequest_v1(sasl_auth_bytes=b'\\x00kpi-worker\\x00{KAFKA_PW}')"), None)
    try:
        raise RuntimeError(f"auth failed for {REDIS_PW}")
    except RuntimeError:
        failed = logging.LogRecord("stream", logging.ERROR, __file__, 2, "failed", (), sys.exc_info())
    text = formatter.format(record) + formatter.format(failed)
    assert KAFKA_PW not in text and REDIS_PW not in text
    assert "\\x00kpi-worker\\x00****" in text and "auth failed for ****" in text


class _FailingRedis:
    def __init__(self) -> None:
        self.error: Exception | None = ConnectionError("WRONGPASS invalid username-password pair")

    async def info(self, section):
        if self.error:
            raise self.error
        return {"run_id": "r1"}

    async def hset(self, name, mapping):
        if self.error:
            raise self.error


def test_redis_sink_logs_why_redis_is_unreachable_once_per_outage_from_the_start(caplog):
    client = _FailingRedis()
    sink = RedisSink(client, "", build_processor_metrics(), snapshot=dict)

    async def run() -> None:
        await sink.check()  # never reached since start: must be logged too
        await sink.check()
        await sink.write({"k": b"{}"})
        client.error = None
        await sink.check()
        client.error = ConnectionError("gone")
        await sink.check()

    with caplog.at_level(logging.INFO, logger="stream.worker.sinks"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" (")[0].split(",")[0] for line in lines] == [
        "redis unreachable", "redis writes succeed again", "redis unreachable"]
    assert "WRONGPASS invalid username-password pair" in lines[0]


def test_redis_sink_is_up_after_a_good_check_even_with_nothing_to_write():
    client = _FailingRedis()
    client.error = None
    metrics = build_processor_metrics()
    sink = RedisSink(client, "", metrics, snapshot=dict)
    asyncio.run(sink.check())
    assert sink.up and metrics.redis_up._value.get() == 1
    client.error = ConnectionError("gone")
    asyncio.run(sink.check())
    assert not sink.up and metrics.redis_up._value.get() == 0


def test_local_services_keep_passwords_out_of_repr_and_urls(tmp_path):
    tls = TlsFiles(*(tmp_path / name for name in ("ca.pem", "chain.pem", "key.pem", "keystore.pem")))
    redis = RedisServer(port=6390, username="kpi", password=REDIS_PW, tls=tls)
    assert redis.url == f"rediss://kpi@127.0.0.1:6390/0?ssl_ca_certs={str(tls.ca_cert).replace('/', '%2F')}"
    broker = KafkaBroker(tls=tls, scram_users={"kpi-worker": KAFKA_PW})
    assert REDIS_PW not in repr(redis) + redis.url and KAFKA_PW not in repr(broker)


def test_secured_broker_keeps_controller_and_inter_broker_listeners_plaintext(tmp_path):
    tls = TlsFiles(*(tmp_path / name for name in ("ca.pem", "chain.pem", "key.pem", "keystore.pem")))
    broker = KafkaBroker(port=9092, controller_port=9093, sasl_ssl_port=9094, tls=tls,
                         scram_users={"kpi-worker": KAFKA_PW}, run_dir=tmp_path)
    props = dict(line.split("=", 1) for line in broker._properties().splitlines())
    assert props["listeners"] == ("PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,"
                                  "SASL_SSL://127.0.0.1:9094")
    assert props["listener.security.protocol.map"].endswith("SASL_SSL:SASL_SSL")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(tls.server_keystore)
    assert KAFKA_PW not in broker._properties()
    assert broker.sasl_ssl_bootstrap == "127.0.0.1:9094"


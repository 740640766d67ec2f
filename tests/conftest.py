"""Session-wide real services: one Kafka broker (KRaft) and one Redis, started on free ports by
the project's own code and stopped by pid at the end. Nothing here skips: a missing service is
a failure with its reason (scripts/setup.sh installs what is needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.devtools.localstack import KafkaBroker, RedisServer


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in path.parts:
            item.add_marker(pytest.mark.e2e)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    broker = KafkaBroker().start(tmp_path_factory.mktemp("kafka"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer().start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()

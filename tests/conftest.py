"""Session-wide real services: one Kafka broker (KRaft) and one Redis, started on free ports by
the project's own code and stopped by pid at the end. Nothing here skips: a missing service is
a failure with its reason (scripts/setup.sh installs what is needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.devtools.localstack import KafkaBroker, RedisServer


TESTS = Path(__file__).resolve().parent
TIERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e, "deploy": pytest.mark.deploy}


def pytest_collection_modifyitems(config, items):
    """Each test's tier is the folder under tests/ that holds it; anything else is a unit test."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        tier = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else None
        item.add_marker(TIERS.get(tier, pytest.mark.unit))


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

"""The topics the service creates before Faust starts include every table's changelog."""

from stream.core.config import KpiSettings, ServiceSettings
from stream.kafka.topics import TABLES, TopicNames
from stream.worker.app import KpiWorker


def test_every_faust_table_of_the_worker_has_its_changelog_created_up_front():
    settings = ServiceSettings(kpi=KpiSettings.from_env({}), app_id="kpi-test", topic_prefix="p.")
    worker = KpiWorker(settings)
    changelogs = {table.changelog_topic.get_topic_name() for table in worker.app.tables.values()}
    names = TopicNames("p.", "kpi-test")
    assert changelogs == {names.changelog(table) for table in TABLES}
    assert changelogs <= set(names.specs(8))
    assert all(names.specs(8)[topic]["cleanup.policy"] == "compact" for topic in changelogs)


def test_agents_receive_each_message_as_the_bytes_kafka_returned():
    import asyncio

    from faust.types import TP
    from faust.types.tuples import Message

    settings = ServiceSettings(kpi=KpiSettings.from_env({}), app_id="kpi-test", topic_prefix="p.")
    worker = KpiWorker(settings)
    topics = [worker.partials_topic, *(agent.channel for agent in worker.app.agents.values())]
    for raw_key, raw_value in ((b"outlet-1", b'{"type": "order.placed"}'), (b"\xff\xfe", b"\x00not json\xff"),
                               (None, None)):
        message = Message(topic="p.sales.orders", partition=0, offset=1, timestamp=0.0, timestamp_type=0,
                          headers=[], key=raw_key, value=raw_value, checksum=None, tp=TP("p.sales.orders", 0))
        for topic in topics:
            event = asyncio.run(topic.decode(message))
            assert (event.key, event.value, event.message) == (raw_key, raw_value, message)

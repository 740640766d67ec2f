"""The topics the service creates before Faust starts include every table's changelog."""

from stream.config import KpiSettings, ServiceSettings
from stream.topics import TABLES, TopicNames
from stream.worker import KpiWorker


def test_every_faust_table_of_the_worker_has_its_changelog_created_up_front():
    settings = ServiceSettings(kpi=KpiSettings.from_env({}), app_id="kpi-test", topic_prefix="p.")
    worker = KpiWorker(settings)
    changelogs = {table.changelog_topic.get_topic_name() for table in worker.app.tables.values()}
    names = TopicNames("p.", "kpi-test")
    assert changelogs == {names.changelog(table) for table in TABLES}
    assert changelogs <= set(names.specs(8))
    assert all(names.specs(8)[topic]["cleanup.policy"] == "compact" for topic in changelogs)

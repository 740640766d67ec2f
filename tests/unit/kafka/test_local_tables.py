"""The on-disk table store is trusted when it holds only acknowledged writes (stream/kafka/local_tables.py)."""

from __future__ import annotations

import pytest

from stream.kafka.local_tables import ACKNOWLEDGED_ONLY_MARK, CLEAN_STOP_MARK, trust_local_tables_or_discard

pytestmark = pytest.mark.unit


def _tables_with_a_database(tmp_path, *marks: str):
    table_dir = tmp_path / "v1" / "tables"
    (table_dir / "outlet-facts-0.db").mkdir(parents=True)
    (table_dir / "outlet-facts-0.db" / "000008.sst").write_bytes(b"facts")
    for mark in marks:
        (table_dir / mark).touch()
    return table_dir


def test_tables_of_this_version_are_kept_after_any_stop_crash_included(tmp_path):
    table_dir = _tables_with_a_database(tmp_path, ACKNOWLEDGED_ONLY_MARK)
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is True
    assert (table_dir / "outlet-facts-0.db" / "000008.sst").read_bytes() == b"facts"
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is True


def test_tables_an_earlier_version_left_after_a_crash_are_discarded(tmp_path):
    table_dir = _tables_with_a_database(tmp_path)
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is False
    assert not (table_dir / "outlet-facts-0.db").exists()
    assert (table_dir / ACKNOWLEDGED_ONLY_MARK).exists(), "the new store is this version's from now on"


def test_tables_an_earlier_version_left_after_a_clean_stop_are_kept_and_become_this_versions(tmp_path):
    table_dir = _tables_with_a_database(tmp_path, CLEAN_STOP_MARK)
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is True
    assert (table_dir / "outlet-facts-0.db").exists()
    assert not (table_dir / CLEAN_STOP_MARK).exists()
    assert (table_dir / ACKNOWLEDGED_ONLY_MARK).exists()


def test_a_first_start_has_nothing_to_keep(tmp_path):
    table_dir = tmp_path / "v1" / "tables"
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is False
    assert (table_dir / ACKNOWLEDGED_ONLY_MARK).exists()


def test_the_memory_store_leaves_the_directory_alone(tmp_path):
    table_dir = _tables_with_a_database(tmp_path)
    assert trust_local_tables_or_discard(table_dir, "memory://") is False
    assert (table_dir / "outlet-facts-0.db").exists()
    assert not (table_dir / ACKNOWLEDGED_ONLY_MARK).exists()

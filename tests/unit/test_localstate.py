"""The on-disk table store is trusted after a clean stop only (stream/localstate.py)."""

from __future__ import annotations

import pytest

from stream.localstate import CLEAN_STOP_MARK, mark_clean_stop, trust_local_tables_or_discard

pytestmark = pytest.mark.unit


def _tables_with_a_database(tmp_path):
    table_dir = tmp_path / "v1" / "tables"
    (table_dir / "outlet-facts-0.db").mkdir(parents=True)
    (table_dir / "outlet-facts-0.db" / "000008.sst").write_bytes(b"facts")
    return table_dir


def test_tables_left_by_a_crashed_run_are_discarded(tmp_path):
    table_dir = _tables_with_a_database(tmp_path)
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is False
    assert not table_dir.exists()


def test_tables_left_by_a_clean_stop_are_kept_and_the_mark_is_consumed(tmp_path):
    table_dir = _tables_with_a_database(tmp_path)
    mark_clean_stop(table_dir, "rocksdb://")
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is True
    assert (table_dir / "outlet-facts-0.db" / "000008.sst").read_bytes() == b"facts"
    # a crash of the run that just started must not look clean to the next one
    assert not (table_dir / CLEAN_STOP_MARK).exists()
    assert trust_local_tables_or_discard(table_dir, "rocksdb://") is False
    assert not table_dir.exists()


def test_a_first_start_has_nothing_to_discard(tmp_path):
    assert trust_local_tables_or_discard(tmp_path / "v1" / "tables", "rocksdb://") is False


def test_the_memory_store_leaves_the_directory_alone(tmp_path):
    table_dir = _tables_with_a_database(tmp_path)
    assert trust_local_tables_or_discard(table_dir, "memory://") is False
    mark_clean_stop(table_dir, "memory://")
    assert (table_dir / "outlet-facts-0.db").exists()
    assert not (table_dir / CLEAN_STOP_MARK).exists()

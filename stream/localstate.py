"""When the on-disk table store (`KPI_STORE=rocksdb://`) may be trusted after a restart.

The worker writes each batch of facts into its local store first and to the changelog topic
right after (stream/worker.py `_flush_facts`): a rebuild that runs meanwhile must find them. After
a kill between the two, the local store holds facts the changelog never got. Their events'
offsets were not committed, so they are read again -- but the engine rebuilt from the local
store already has them, dedupes them, and never writes them again: the changelog would lack them
for good, and whichever worker next rebuilds that partition from the changelog (another pod, or
this one with a new volume) would lose those events. Faust trusts its local store regardless.

So the local store is trusted only after a clean stop: the worker leaves a mark in the table
directory when it stops without a crash (faust flushed every pending write before that), removes
the mark as it starts, and at start discards the table directory when the mark is missing --
faust then restores every table from its changelog, as with `memory://`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CLEAN_STOP_MARK = ".clean-stop"


def store_is_on_disk(store_url: str) -> bool:
    return not store_url.startswith("memory:")


def trust_local_tables_or_discard(table_dir: Path, store_url: str) -> bool:
    """Call before the worker starts. Returns True when the local tables are kept (the last run
    stopped cleanly), False when there was nothing to keep or they were discarded. Removes the
    mark either way: a crash of this run must not look clean to the next one."""
    if not store_is_on_disk(store_url) or not table_dir.exists():
        return False
    mark = table_dir / CLEAN_STOP_MARK
    if mark.exists():
        mark.unlink()
        log.info("local table state kept (%s): the last run stopped cleanly; faust reads only the "
                 "changelog written since", table_dir)
        return True
    if any(table_dir.iterdir()):
        log.warning("local table state discarded (%s): the last run did not stop cleanly, so the store "
                    "may hold writes its changelog never got; restoring every table from the changelog "
                    "topics instead", table_dir)
        shutil.rmtree(table_dir)
    return False


def mark_clean_stop(table_dir: Path, store_url: str) -> None:
    """Call after the worker stopped without a crash (faust has flushed its writes by then)."""
    if store_is_on_disk(store_url) and table_dir.exists():
        (table_dir / CLEAN_STOP_MARK).touch()

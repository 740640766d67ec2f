"""When the on-disk table store (`KPI_STORE=rocksdb://`) may be trusted after a restart.

A local store may be trusted only if it never holds a write its changelog topic lacks. Facts are
the table where that matters: after a kill, the events of facts that are in the local store but
not in the changelog are read again, the engine rebuilt from the local store dedupes them, and
they are never written again -- so whichever worker next rebuilds that partition from the
changelog (another pod, or this one with a new volume) would lose them. The worker puts a batch
of facts into the local store only when Kafka has acknowledged it (stream/worker/app.py
`_flush_facts`), so its store is never ahead of the changelog, after a clean stop or a kill; faust
then reads only the changelog written since its last recorded offset.

The scope-partials table is still written to the store before its changelog: a partial there
that the changelog lacks is harmless, because its input message was not committed either (a
commit waits for the producer), so it is read and written again, same version, after a kill.

Stores written by earlier versions put facts into the store first and sent them after: those are
trusted only after a clean stop (they carry a `.clean-stop` mark), and discarded otherwise.
A store this version opens carries the `.acknowledged-writes-only` mark from then on.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# written by this version when it opens the store: every write in it was acknowledged first
ACKNOWLEDGED_ONLY_MARK = ".acknowledged-writes-only"
# written by earlier versions after a clean stop (and consumed at their next start)
CLEAN_STOP_MARK = ".clean-stop"


def store_is_on_disk(store_url: str) -> bool:
    return not store_url.startswith("memory:")


def trust_local_tables_or_discard(table_dir: Path, store_url: str) -> bool:
    """Call before the worker starts. Returns True when existing local tables are kept, False
    when there was nothing to keep or they were discarded (an earlier version's store after a
    crash). Leaves the store marked as this version's."""
    if not store_is_on_disk(store_url):
        return False
    kept = False
    if table_dir.exists() and any(table_dir.iterdir()):
        if (table_dir / ACKNOWLEDGED_ONLY_MARK).exists() or (table_dir / CLEAN_STOP_MARK).exists():
            log.info("local table state kept (%s): it holds only writes Kafka acknowledged; faust reads "
                     "only the changelog written since", table_dir)
            kept = True
        else:
            log.warning("local table state discarded (%s): written by an earlier version that did not stop "
                        "cleanly, so it may hold writes its changelog never got; restoring every table from "
                        "the changelog topics instead", table_dir)
            shutil.rmtree(table_dir)
    table_dir.mkdir(parents=True, exist_ok=True)
    (table_dir / CLEAN_STOP_MARK).unlink(missing_ok=True)
    (table_dir / ACKNOWLEDGED_ONLY_MARK).touch()
    return kept

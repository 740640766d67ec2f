"""Engine snapshots: restart from each partition's saved engine instead of from every fact.

A rebuild re-applies every fact ever stored (~40 us each), so restart time grows with history. A
worker that stops saves each partition's engine to a local file; the next start restores it and
applies only the fact batches written since. The snapshot is an optimisation, never a source of
truth -- the facts tables still hold everything -- so a snapshot is used only when it provably
equals what a rebuild would give:

- the same code and settings wrote it (`engine_fingerprint`: KPI settings, format, Python, and the
  source of every module that shapes engine state; an upgrade or a settings change rebuilds);
- every fact batch it covers is still in the facts table (`CoveredBatches`): the snapshot state is
  exactly those batches plus the facts that were applied but not acknowledged by Kafka yet,
  which it carries -- sent batches by id (`in_flight`: those found in the table count as covered,
  the others are written again) and facts not sent yet (`unwritten`, written again). A batch
  lost with a discarded local store, or a snapshot older than a deleted changelog, fails this
  check, and the partition is rebuilt from its facts.

Facts commute, so a batch written after the snapshot (by this worker, or by another owner of the
partition meanwhile) is applied on top; a fact written twice (re-read after a crash) is dropped by
the restored engine's deduper, within the dedupe horizon -- as the live worker drops a re-read.
Each file is used at most once: it is unlinked as it is read.

Snapshots are saved at a stop (`SnapshotShelf.save`) and, while the worker runs, by a forked copy
of it (`BackgroundSaver`), so that a kill finds one too.

Pure: files, pickle and fork, no Faust or Kafka. The files are as trusted as the local table store
next to them (pickle runs code on load: the directory must not be writable by others).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from array import array
from dataclasses import dataclass, field
from pathlib import Path


from stream.core.config import KpiSettings
from stream.core.engine import Family, KpiEngine
from stream.core.gcpause import cyclic_gc_paused

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2
# The code that decides what an engine holds (the whole core) and how it is read back (this file).
_STATE_SOURCES = (*sorted((Path(__file__).resolve().parents[1] / "core").glob("*.py")), Path(__file__).resolve())
_SUFFIX = ".snapshot"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The background copy pickles at the lowest CPU priority: it takes a core for seconds at a time,
# which at the worker's priority shows as a ~1 s p99 blip on a 2-core machine under load
# (docs/performance.md).
SAVER_NICENESS = 19


def engine_fingerprint(settings: KpiSettings, owner: str) -> str:
    """`owner` names whose facts tables the snapshots belong to (app id, topics, partitions): a
    state directory reused by another app must not hand it this app's engines."""
    digest = hashlib.sha256(
        f"format {SNAPSHOT_FORMAT}; python {sys.version_info[:2]}; {owner}; {settings!r}".encode())
    for source in _STATE_SOURCES:
        digest.update(source.read_bytes())
    return digest.hexdigest()


@dataclass(slots=True)
class CoveredBatches:
    """The fact batches whose facts an engine holds. A worker writes a few batches a second per
    partition, so batch numbers are kept as arrays per writer instance: 8 bytes a batch."""

    numbers: dict[str, array] = field(default_factory=dict)

    def add(self, batch: tuple[str, int]) -> None:
        instance, number = batch
        numbers = self.numbers.get(instance)
        if numbers is None:
            numbers = self.numbers[instance] = array("q")
        numbers.append(number)

    def __len__(self) -> int:
        return sum(len(numbers) for numbers in self.numbers.values())

    def lookup(self) -> "CoveredLookup":
        return CoveredLookup({instance: set(numbers) for instance, numbers in self.numbers.items()})


@dataclass(slots=True)
class CoveredLookup:
    """Membership tests over CoveredBatches (sets built once, for one restore)."""

    numbers: dict[str, set[int]]

    def __contains__(self, batch: tuple[str, int]) -> bool:
        numbers = self.numbers.get(batch[0])
        return numbers is not None and batch[1] in numbers


def missing_batches(covered: CoveredBatches, table_batches, lookup: CoveredLookup | None = None) -> int:
    """How many of the covered batches are not among `table_batches` (the batch ids of one
    partition's facts-table keys, stream/kafka/wire_facts.py): a snapshot is usable only at 0."""
    lookup = lookup or covered.lookup()
    present = sum(1 for batch in table_batches if batch in lookup)
    return len(covered) - present


@dataclass(slots=True)
class EngineSnapshot:
    """One partition's engine of one family: its state is exactly the facts of the `covered`
    batches (acknowledged by Kafka), of the `in_flight` batches (batch id -> facts: sent, not
    acknowledged when the snapshot was taken; they may or may not have reached the table), and
    `unwritten` ([entity, event_id, ref_us, raw] facts applied but not sent yet)."""

    engine: KpiEngine
    covered: CoveredBatches
    unwritten: list[list]
    in_flight: dict[tuple[str, int], list[list]] = field(default_factory=dict)


@dataclass(slots=True)
class BackgroundSave:
    """What a finished background save reports (`BackgroundSaver.poll`)."""

    saved: bool
    partitions: list[tuple[Family, int]]
    seconds: float
    size: int  # bytes of the files written


class BackgroundSaver:
    """Saves engine snapshots from a forked copy of the process while the worker goes on.

    fork() gives the copy the engines exactly as they are at that instant, without stopping the
    worker for the seconds a million outlets take to pickle; the kernel copies only the pages
    either process writes meanwhile. The copy only pickles and writes files: it never touches
    the event loop, sockets or locks it inherited, and leaves with os._exit. It dies with the
    worker (PR_SET_PDEATHSIG), so no orphan writes a snapshot after the worker is gone.
    """

    def __init__(self, shelf: "SnapshotShelf") -> None:
        self.shelf = shelf
        self.pid: int | None = None
        self.started = 0.0
        self.partitions: list[tuple[Family, int]] = []

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, snapshots: dict[tuple[Family, int], EngineSnapshot]) -> None:
        """Fork; the copy saves `snapshots`. Build them with no await before this call: they
        must be one consistent instant of the worker's state."""
        if self.pid is not None:
            raise RuntimeError("a background save is already running")
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._save_in_child(parent, snapshots)  # does not return
        self.pid, self.started, self.partitions = pid, time.monotonic(), list(snapshots)

    def _save_in_child(self, parent: int, snapshots: dict[tuple[Family, int], EngineSnapshot]) -> None:
        status = 1
        try:
            _die_with(parent)
            signal.set_wakeup_fd(-1)  # the event loop's wake-up pipe is the worker's, not ours
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(number, signal.SIG_DFL)
            gc.disable()  # a collection would touch (and so copy) every tracked object's page
            os.nice(SAVER_NICENESS)
            for (family, partition), snapshot in snapshots.items():
                self.shelf.save(family, partition, snapshot)
            status = 0
        except BaseException:  # noqa: BLE001 - reported on stderr, the worker logs the exit status
            try:
                os.write(2, f"background snapshot save failed:\n{traceback.format_exc()}".encode())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(status)

    def poll(self) -> BackgroundSave | None:
        """The finished save's report, once; None while it runs (or when none was started)."""
        if self.pid is None:
            return None
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._finished(os.waitstatus_to_exitcode(status) == 0)

    def stop(self) -> BackgroundSave | None:
        """Kill a running save (its temporary files stay behind for `SnapshotShelf.discard`)."""
        if self.pid is None:
            return None
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        return self._finished(False)

    def _finished(self, saved: bool) -> BackgroundSave:
        size = 0
        if saved:
            for family, partition in self.partitions:
                try:
                    size += self.shelf._path(family, partition).stat().st_size
                except FileNotFoundError:  # already taken by a rebuild
                    pass
        report = BackgroundSave(saved, self.partitions, time.monotonic() - self.started, size)
        self.pid, self.partitions = None, []
        return report


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies; exit at once if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent check below still applies
        pass
    if os.getppid() != parent:
        os._exit(1)


class SnapshotShelf:
    """The snapshot files of one worker: `{family}-{partition}.snapshot` in `directory`."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        self.fingerprint = fingerprint

    def _path(self, family: Family, partition: int) -> Path:
        return self.directory / f"{family.value}-{partition}{_SUFFIX}"

    def save(self, family: Family, partition: int, snapshot: EngineSnapshot) -> int:
        """Write atomically (temporary file, fsync, rename); returns the bytes written. A stop
        that kills the process meanwhile leaves only a temporary file, which `take` ignores."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(family, partition)
        # one temporary name per process: two workers sharing a directory never write one file
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with cyclic_gc_paused(), open(temporary, "wb") as handle:
            pickle.dump((SNAPSHOT_FORMAT, self.fingerprint), handle, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(snapshot, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(temporary, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return size

    def take(self, family: Family, partition: int) -> EngineSnapshot | None:
        """The partition's snapshot, if there is one written by the same code and settings; the
        file is removed either way (a snapshot is used once: the facts move on after it)."""
        path = self._path(family, partition)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return None
        with handle:
            path.unlink()
            try:
                with cyclic_gc_paused():
                    header = pickle.load(handle)
                    if header != (SNAPSHOT_FORMAT, self.fingerprint):
                        log.warning("snapshot %s ignored: written by other code or settings than this "
                                    "worker's; rebuilding the partition from its facts", path.name)
                        return None
                    snapshot = pickle.load(handle)
            except Exception as error:  # noqa: BLE001 - a bad file must cost a rebuild, not the worker
                log.warning("snapshot %s ignored: unreadable (%s: %s); rebuilding the partition from its facts",
                            path.name, type(error).__name__, error)
                return None
        if not isinstance(snapshot, EngineSnapshot):
            log.warning("snapshot %s ignored: not an engine snapshot", path.name)
            return None
        return snapshot

    def discard(self, family: Family) -> int:
        """Remove the family's snapshots that were not taken (partitions this worker did not get,
        and temporary files of an interrupted save). Returns how many files were removed."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.iterdir():
            name = path.name.lstrip(".")
            if name.startswith(f"{family.value}-") and (name.endswith(_SUFFIX) or name.endswith(".tmp")):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

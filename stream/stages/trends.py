"""Short KPI trends kept in memory for the dashboard page: a bounded ring of samples per series,
and the territories whose active accounts fell most over it.

Pure: the instants of the samples are passed in. Every series shares one ring of sample instants
(`TrendRing.instants`), and each series keeps its values at the same ring positions (NaN where a
sample had no value for it), so a series costs `capacity` doubles whatever its history, and the
ring as a whole at most `max_series * capacity` doubles: bounded whatever the number of scopes.
A series that no sample has held for a whole ring is dropped; new series past `max_series` are
refused (and counted) until old ones leave.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Iterable, Mapping

MISSING = math.nan


@dataclass(frozen=True, slots=True)
class Move:
    """One series' change over the ring: its first and last sampled values and when."""

    key: str
    first: float
    last: float
    first_at: float
    last_at: float

    @property
    def change(self) -> float:
        return self.last - self.first

    @property
    def change_ratio(self) -> float | None:
        """The change as a share of the first value (None when that was 0)."""
        return None if self.first == 0 else self.change / self.first


class TrendRing:
    """The last `capacity` samples of up to `max_series` numeric series, keyed by any string."""

    def __init__(self, capacity: int, max_series: int) -> None:
        if capacity < 2:
            raise ValueError("a trend needs at least two samples")
        if max_series < 1:
            raise ValueError("max_series must be positive")
        self.capacity = capacity
        self.max_series = max_series
        self._instants = array("d", [MISSING]) * capacity
        self._series: dict[str, array] = {}
        self._last_seen: dict[str, int] = {}  # key -> sequence number of the last sample holding it
        self.samples = 0  # samples recorded so far (the next one's sequence number)
        self.refused = 0  # series not kept in the last sample because the ring was full

    def __len__(self) -> int:
        return len(self._series)

    def __contains__(self, key: str) -> bool:
        return key in self._series

    def keys(self) -> list[str]:
        return list(self._series)

    def record(self, at: float, values: Mapping[str, float | None]) -> None:
        """One sample at instant `at` (not before the previous one): `values` holds every series
        sampled; a key absent or None has no value at this instant."""
        if self.samples and at < self.latest_instant():
            raise ValueError(f"sample at {at} is before the previous one at {self.latest_instant()}")
        seq = self.samples
        slot = seq % self.capacity
        self._instants[slot] = at
        for key, ring in self._series.items():
            value = values.get(key)
            ring[slot] = MISSING if value is None else float(value)
        refused = 0
        for key, value in values.items():
            if value is None:
                continue
            if key in self._series:
                self._last_seen[key] = seq
                continue
            if len(self._series) >= self.max_series:
                self._drop_stale(seq)
                if len(self._series) >= self.max_series:
                    refused += 1
                    continue
            ring = array("d", [MISSING]) * self.capacity
            ring[slot] = float(value)
            self._series[key] = ring
            self._last_seen[key] = seq
        self.refused = refused
        self.samples = seq + 1
        self._drop_stale(seq)

    def _drop_stale(self, seq: int) -> None:
        """Forget series no sample of the whole ring held (all their values are missing)."""
        oldest_kept = seq - self.capacity + 1
        stale = [key for key, last in self._last_seen.items() if last < oldest_kept]
        for key in stale:
            del self._series[key]
            del self._last_seen[key]

    def _order(self) -> range:
        """Ring positions, oldest sample first."""
        count = min(self.samples, self.capacity)
        start = self.samples - count
        return range(start, start + count)

    def latest_instant(self) -> float | None:
        return None if not self.samples else self._instants[(self.samples - 1) % self.capacity]

    def instants(self) -> list[float]:
        return [self._instants[seq % self.capacity] for seq in self._order()]

    def points(self, key: str) -> list[float | None]:
        """The series' values aligned with `instants()`; None where a sample had none."""
        ring = self._series.get(key)
        if ring is None:
            return [None] * len(self._order())
        return [_known(ring[seq % self.capacity]) for seq in self._order()]

    def move(self, key: str) -> Move | None:
        """First and last known values of a series over the ring (None without two samples)."""
        ring = self._series.get(key)
        if ring is None:
            return None
        known = [seq for seq in self._order() if not math.isnan(ring[seq % self.capacity])]
        if len(known) < 2:
            return None
        first, last = known[0] % self.capacity, known[-1] % self.capacity
        return Move(key, ring[first], ring[last], self._instants[first], self._instants[last])


def worst_movers(ring: TrendRing, keys: Iterable[str], limit: int) -> list[Move]:
    """Of `keys`, the series that fell most over the ring (largest drop first; ties by key);
    only series that fell."""
    moves = [move for move in (ring.move(key) for key in keys) if move is not None and move.change < 0]
    moves.sort(key=lambda move: (move.change, move.key))
    return moves[:limit]


def picks(count: int, most: int) -> list[int]:
    """At most `most` of `count` positions, evenly spaced, always with the last one (the current
    value): which samples a page's sparklines get."""
    if count <= most:
        return list(range(count))
    if most < 2:
        return [count - 1]
    step = (count - 1) / (most - 1)
    return sorted({round(i * step) for i in range(most)} | {count - 1})


def _known(value: float) -> float | None:
    return None if math.isnan(value) else value

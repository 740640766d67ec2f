"""The business calendar (spec 8): period kinds, their bounds in UTC and their designators.

A period of kind `day`, `week` (ISO 8601, Monday to Monday), `month`, `quarter` or `year` is the
half-open interval of instants [start, end) whose local date, in the business time zone, falls in
it. Its start is the first instant whose local date is its first day: local midnight, or -- when
midnight does not exist because a DST gap swallows it -- the transition that ends the gap. So a
local day may last 23 or 25 hours, and a period is one interval even across DST changes.

Periods are numbered per kind by an integer index that grows by one from each period to the
next (`index_of_date`): day = the date's ordinal, week = (ordinal of its Monday - 1) / 7, month =
year * 12 + month - 1, quarter = year * 4 + quarter - 1, year = the year. The designator
(`2026-11-23`, `2026-W48`, `2026-11`, `2026-Q4`, `2026`) names the period in keys and in the
`window` field; `parse_designator` reads one strictly (zero-padded, a real date/week).

Pure: no clock reads. Bounds are cached per day, so after warm-up an instant is placed in its
periods with a comparison or two (`day_of`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIOD_KINDS = ("day", "week", "month", "quarter", "year")
# the to-date alias of each kind's current period (spec 8)
ALIASES = {"day": "today", "week": "wtd", "month": "mtd", "quarter": "qtd", "year": "ytd"}
LMTD = "lmtd"
ALIAS_WINDOWS = tuple(ALIASES.values()) + (LMTD,)

_US = 1_000_000
_EPOCH = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)


class UnknownZone(ValueError):
    pass


@lru_cache(maxsize=None)
def zone_named(name: str) -> ZoneInfo:
    """The IANA zone `name`; UnknownZone if there is none by that name."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise UnknownZone(f"not a time zone name: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise UnknownZone(f"unknown time zone {name!r}: {error}") from None


@lru_cache(maxsize=None)
def zone_offsets_seconds(name: str) -> frozenset[int]:
    """Every UTC offset the zone uses between 1970 and 2100, sampled twice a month (DST periods
    last months): what decides whether local midnights fall on slot boundaries."""
    zone = zone_named(name)
    offsets = set()
    at = datetime(1970, 1, 1, tzinfo=timezone.utc)
    end = datetime(2100, 1, 1, tzinfo=timezone.utc)
    step = timedelta(days=15)
    while at < end:
        offsets.add(int(at.astimezone(zone).utcoffset().total_seconds()))
        at += step
    return frozenset(offsets)


def index_of_date(kind: str, day: date) -> int:
    if kind == "day":
        return day.toordinal()
    if kind == "week":
        return (day.toordinal() - 1) // 7  # ordinal 1 (0001-01-01) is a Monday
    if kind == "month":
        return day.year * 12 + day.month - 1
    if kind == "quarter":
        return day.year * 4 + (day.month - 1) // 3
    if kind == "year":
        return day.year
    raise ValueError(f"unknown period kind {kind!r}")


def first_day(kind: str, index: int) -> date:
    if kind == "day":
        return date.fromordinal(index)
    if kind == "week":
        return date.fromordinal(index * 7 + 1)
    if kind == "month":
        return date(index // 12, index % 12 + 1, 1)
    if kind == "quarter":
        return date(index // 4, (index % 4) * 3 + 1, 1)
    if kind == "year":
        return date(index, 1, 1)
    raise ValueError(f"unknown period kind {kind!r}")


def designator(kind: str, index: int) -> str:
    start = first_day(kind, index)
    if kind == "day":
        return start.isoformat()
    if kind == "week":
        iso_year, week, _ = start.isocalendar()
        return f"{iso_year:04d}-W{week:02d}"
    if kind == "month":
        return f"{start.year:04d}-{start.month:02d}"
    if kind == "quarter":
        return f"{start.year:04d}-Q{(start.month - 1) // 3 + 1}"
    return f"{start.year:04d}"


def is_designator(window: str) -> bool:
    """Whether a window name is a period designator: those end in a digit, rolling windows
    (`30d`) and aliases (`mtd`) in a letter."""
    return window[-1:].isdigit()


_DESIGNATORS = (
    ("day", re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")),
    ("week", re.compile(r"([0-9]{4})-W([0-9]{2})")),
    ("month", re.compile(r"([0-9]{4})-([0-9]{2})")),
    ("quarter", re.compile(r"([0-9]{4})-Q([1-4])")),
    ("year", re.compile(r"([0-9]{4})")),
)


def parse_designator(text: object) -> tuple[str, int] | None:
    """(kind, index) of a period designator written exactly as `designator` writes it
    (zero-padded, ASCII digits, a real date or ISO week, year 0001 or later); None otherwise."""
    if not isinstance(text, str):
        return None
    for kind, pattern in _DESIGNATORS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        parts = [int(part) for part in match.groups()]
        try:
            if kind == "day":
                day = date(*parts)
            elif kind == "week":
                day = date.fromisocalendar(parts[0], parts[1], 1)
            elif kind == "month":
                day = date(parts[0], parts[1], 1)
            elif kind == "quarter":
                day = date(parts[0], (parts[1] - 1) * 3 + 1, 1)
            else:
                day = date(parts[0], 1, 1)
        except ValueError:
            return None
        return kind, index_of_date(kind, day)
    return None


@dataclass(frozen=True, slots=True)
class DayInfo:
    """One local day and the periods holding it: `periods[i]` is (index, start_us, end_us) of the
    i-th kind of the calendar's kinds."""

    start_us: int
    end_us: int
    periods: tuple[tuple[int, int, int], ...]


class Calendar:
    """The periods of `kinds` in the zone `zone_name`."""

    def __init__(self, zone_name: str, kinds: tuple[str, ...] = PERIOD_KINDS) -> None:
        self.zone_name = zone_name
        self.zone = zone_named(zone_name)
        self.kinds = tuple(kinds)
        self._starts: dict[int, int] = {}  # day ordinal -> start instant
        self._days: dict[int, DayInfo] = {}  # day ordinal -> DayInfo
        self._last: DayInfo | None = None

    def __reduce__(self):  # caches are rebuilt on demand
        return Calendar, (self.zone_name, self.kinds)

    # -- instants and local dates -------------------------------------------------------------

    def local_date(self, t_us: int) -> date:
        return datetime.fromtimestamp(t_us // _US, self.zone).date()

    def day_start_us(self, day: date) -> int:
        """The first instant whose local date is `day` (or later): local midnight, or the end of
        the DST gap that swallows it."""
        ordinal = day.toordinal()
        start = self._starts.get(ordinal)
        if start is None:
            start = self._starts[ordinal] = self._first_instant_of(day)
        return start

    def _first_instant_of(self, day: date) -> int:
        naive = datetime(day.year, day.month, day.day)
        candidates = set()
        for fold in (0, 1):
            offset = naive.replace(fold=fold, tzinfo=self.zone).utcoffset()
            candidates.add((naive - offset - _EPOCH) // _ONE_US)
        for u in sorted(candidates):
            if self.local_date(u) >= day and self.local_date(u - _US) < day:
                return u
        # midnight in a gap: search (whole seconds: offsets and transitions are whole seconds)
        low = (min(candidates) - 2 * 86400 * _US) // _US
        high = (max(candidates) + 2 * 86400 * _US) // _US
        while low < high:  # first second whose local date >= day
            middle = (low + high) // 2
            if self.local_date(middle * _US) >= day:
                high = middle
            else:
                low = middle + 1
        return low * _US

    # -- periods -------------------------------------------------------------------------------

    def bounds(self, kind: str, index: int) -> tuple[int, int]:
        return self.day_start_us(first_day(kind, index)), self.day_start_us(first_day(kind, index + 1))

    def index_of(self, kind: str, t_us: int) -> int:
        return index_of_date(kind, self.local_date(t_us))

    def day_of(self, t_us: int) -> DayInfo:
        """The local day holding `t_us` with its periods of every kind of the calendar."""
        last = self._last
        if last is not None and last.start_us <= t_us < last.end_us:
            return last
        day = self.local_date(t_us)
        info = self._days.get(day.toordinal())
        if info is None:
            info = self._day_info(day)
            if len(self._days) > 4096:  # late events of any age: keep the cache bounded
                self._days.clear()
                self._starts.clear()
            self._days[day.toordinal()] = info
        self._last = info
        return info

    def _day_info(self, day: date) -> DayInfo:
        periods = []
        for kind in self.kinds:
            index = index_of_date(kind, day)
            periods.append((index, *self.bounds(kind, index)))
        return DayInfo(self.day_start_us(day), self.day_start_us(day + timedelta(days=1)), tuple(periods))

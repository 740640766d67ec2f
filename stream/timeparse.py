"""RFC 3339 timestamps <-> integer microseconds since the Unix epoch (UTC).

Hand-written because `datetime.fromisoformat` accepts non-RFC 3339 forms (dates alone, missing
offsets) and is slower. Fractions finer than a microsecond are truncated (floor), which keeps
slot arithmetic exact: floor(floor(t)/R) == floor(t/R).
"""

from __future__ import annotations

import re
from functools import lru_cache
from datetime import datetime, timezone

# ASCII digits only (\d would accept other scripts' digits); `T`/`t` separator; offset required.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_US_PER_DAY = 86_400_000_000


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 (proleptic Gregorian); Howard Hinnant's algorithm."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_rfc3339_us(text: str) -> int | None:
    """Microseconds since the epoch, or None when `text` is not an RFC 3339 date-time."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    y, mo, d, h, mi, s, frac, zulu, sign, oh, om = match.groups()
    year, month, day = int(y), int(mo), int(d)
    hour, minute, second = int(h), int(mi), int(s)
    if not 1 <= month <= 12 or day < 1:
        return None
    days_in_month = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]
    # Leap seconds (second 60) are rejected: Unix time has no instant for them.
    if year == 0 or day > days_in_month or hour > 23 or minute > 59 or second > 59:
        return None
    offset_minutes = 0
    if zulu is None:
        off_h, off_m = int(oh), int(om)
        if off_h > 23 or off_m > 59:
            return None
        offset_minutes = off_h * 60 + off_m
        if sign == "-":
            offset_minutes = -offset_minutes
    micros = int((frac or "0")[:6].ljust(6, "0"))
    seconds = hour * 3600 + minute * 60 + second - offset_minutes * 60
    return _days_from_civil(year, month, day) * _US_PER_DAY + seconds * 1_000_000 + micros


@lru_cache(maxsize=64)  # a publication round formats the same as_of / computed_at for every update
def format_rfc3339_us(t_us: int) -> str:
    """UTC, `Z`, milliseconds when not whole seconds (e.g. 2026-11-23T07:15:00.412Z)."""
    dt = datetime.fromtimestamp(t_us // 1_000_000, tz=timezone.utc)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    micros = t_us % 1_000_000
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"

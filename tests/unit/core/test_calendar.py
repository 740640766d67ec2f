"""The business calendar (stream/core/calendar.py), table-driven: bounds of local periods in UTC
(DST days of 23 and 25 hours, a midnight swallowed by a DST gap), ISO weeks (week 53, week-years
across year ends), designators and their strict parsing, and the KPI_* calendar settings."""

from __future__ import annotations

from datetime import date

import pytest

from stream.core.calendar import Calendar, designator, first_day, index_of_date, parse_designator
from stream.core.config import ConfigError, KpiSettings
from stream.core.timeparse import parse_rfc3339_us

H = 3600 * 1_000_000


def us(text: str) -> int:
    value = parse_rfc3339_us(text)
    assert value is not None, text
    return value


@pytest.mark.parametrize("zone, kind, instant, name, start, end", [
    ("Asia/Jakarta", "day", "2026-11-23T16:59:59Z", "2026-11-23", "2026-11-22T17:00:00Z", "2026-11-23T17:00:00Z"),
    ("Asia/Jakarta", "day", "2026-11-23T17:00:00Z", "2026-11-24", "2026-11-23T17:00:00Z", "2026-11-24T17:00:00Z"),
    ("Asia/Jakarta", "week", "2026-11-23T00:00:00Z", "2026-W48", "2026-11-22T17:00:00Z", "2026-11-29T17:00:00Z"),
    ("Asia/Jakarta", "month", "2026-11-30T17:00:00Z", "2026-12", "2026-11-30T17:00:00Z", "2026-12-31T17:00:00Z"),
    ("Asia/Jakarta", "quarter", "2026-12-31T16:59:59Z", "2026-Q4", "2026-09-30T17:00:00Z", "2026-12-31T17:00:00Z"),
    ("Asia/Jakarta", "quarter", "2026-12-31T17:00:00Z", "2027-Q1", "2026-12-31T17:00:00Z", "2027-03-31T17:00:00Z"),
    ("Asia/Jakarta", "year", "2026-12-31T17:00:00Z", "2027", "2026-12-31T17:00:00Z", "2027-12-31T17:00:00Z"),
    # ISO week 53 of 2026 runs into 2027; 2027-01-01 is in 2026-W53
    ("UTC", "week", "2027-01-01T12:00:00Z", "2026-W53", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"),
    ("UTC", "week", "2027-01-04T00:00:00Z", "2027-W01", "2027-01-04T00:00:00Z", "2027-01-11T00:00:00Z"),
    # 2024-12-30 (a Monday) starts 2025-W01
    ("UTC", "week", "2024-12-31T00:00:00Z", "2025-W01", "2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z"),
    # Europe/Berlin: 2026-03-29 has 23 hours, 2026-10-25 has 25
    ("Europe/Berlin", "day", "2026-03-29T12:00:00Z", "2026-03-29", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
    ("Europe/Berlin", "day", "2026-10-25T12:00:00Z", "2026-10-25", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
    ("Europe/Berlin", "month", "2026-10-31T22:59:59Z", "2026-10", "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z"),
    # America/Sao_Paulo, historic DST: on 2018-11-04 midnight did not exist (00:00 -> 01:00), the
    # day starts at the transition (03:00Z) and has 23 hours; on 2018-02-17 23:00-24:00 ran twice
    ("America/Sao_Paulo", "day", "2018-11-04T12:00:00Z", "2018-11-04", "2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z"),
    ("America/Sao_Paulo", "day", "2018-11-04T02:59:59Z", "2018-11-03", "2018-11-03T03:00:00Z", "2018-11-04T03:00:00Z"),
    ("America/Sao_Paulo", "day", "2018-02-18T02:30:00Z", "2018-02-17", "2018-02-17T02:00:00Z", "2018-02-18T03:00:00Z"),
    ("America/Sao_Paulo", "week", "2018-11-04T03:00:00Z", "2018-W44", "2018-10-29T03:00:00Z", "2018-11-05T02:00:00Z"),
])
def test_period_bounds_and_designators(zone, kind, instant, name, start, end):
    calendar = Calendar(zone, (kind,))
    index = calendar.index_of(kind, us(instant))
    assert designator(kind, index) == name
    assert calendar.bounds(kind, index) == (us(start), us(end))
    assert parse_designator(name) == (kind, index)
    info = calendar.day_of(us(instant))
    assert info.periods == ((index, us(start), us(end)),)
    assert info.start_us <= us(instant) < info.end_us


def test_period_indices_step_by_one_and_invert():
    for kind in ("day", "week", "month", "quarter", "year"):
        for day in (date(2026, 1, 1), date(2026, 12, 31), date(2027, 1, 1), date(2020, 2, 29), date(2015, 12, 28)):
            index = index_of_date(kind, day)
            assert first_day(kind, index) <= day < first_day(kind, index + 1)
            assert index_of_date(kind, first_day(kind, index + 1)) == index + 1


@pytest.mark.parametrize("text", [
    "2026-9", "2026-9-01", "2026-09-1", "26-09", "2026-W5", "2026-W54", "2025-W53", "2026-Q5", "2026-Q0",
    "2026-13", "2026-02-30", "0000", "2026-w48", "2026-q4", "２０２６", " 2026", "2026 ", "", None, 2026,
])
def test_designators_are_parsed_strictly(text):
    assert parse_designator(text) is None


@pytest.mark.parametrize("text, kind", [
    ("2026-11-23", "day"), ("2026-W48", "week"), ("2026-W53", "week"), ("2020-W53", "week"),
    ("2026-11", "month"), ("2026-Q4", "quarter"), ("2026", "year"),
])
def test_designators_round_trip(text, kind):
    parsed = parse_designator(text)
    assert parsed is not None and parsed[0] == kind
    assert designator(*parsed) == text


def test_calendar_settings_from_the_environment():
    settings = KpiSettings.from_env({})
    assert (settings.timezone, settings.periods, settings.period_history) == (
        "Asia/Jakarta", ("day", "week", "month", "quarter"), 2)
    settings = KpiSettings.from_env({"KPI_TIMEZONE": "Europe/Berlin", "KPI_PERIODS": "month, year",
                                     "KPI_PERIOD_HISTORY": "0"})
    assert (settings.timezone, settings.periods, settings.period_history) == ("Europe/Berlin", ("month", "year"), 0)
    assert KpiSettings.from_env({"KPI_PERIODS": ""}).periods == ()


@pytest.mark.parametrize("env, named", [
    ({"KPI_TIMEZONE": "Asia/Jakartaa"}, "KPI_TIMEZONE"),
    ({"KPI_TIMEZONE": ""}, "KPI_TIMEZONE"),
    ({"KPI_TIMEZONE": "../etc/passwd"}, "KPI_TIMEZONE"),
    ({"KPI_PERIODS": "day,fortnight"}, "KPI_PERIODS"),
    ({"KPI_PERIODS": "day,day"}, "KPI_PERIODS"),
    ({"KPI_PERIOD_HISTORY": "-1"}, "KPI_PERIOD_HISTORY"),
    ({"KPI_PERIOD_HISTORY": "two"}, "KPI_PERIOD_HISTORY"),
    # India is +05:30: one-hour slots cannot hold its local midnights
    ({"KPI_TIMEZONE": "Asia/Kolkata", "KPI_SLOT_SECONDS": "3600", "KPI_WINDOWS": "7d"}, "KPI_SLOT_SECONDS"),
])
def test_bad_calendar_settings_name_their_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        KpiSettings.from_env(env)


def test_without_periods_any_slot_goes():
    settings = KpiSettings.from_env({"KPI_TIMEZONE": "Asia/Kolkata", "KPI_SLOT_SECONDS": "3600",
                                     "KPI_WINDOWS": "7d", "KPI_PERIODS": ""})
    assert settings.periods == ()

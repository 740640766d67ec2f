"""The dashboard's data and trend sampling, against an in-memory stand-in for Redis."""

from __future__ import annotations

import asyncio
import fnmatch
import logging

import orjson
import pytest

from stream.core.catalogue import kpi_key
from stream.worker import dashboard as dashboard_module
from stream.worker.dashboard import (
    HEADLINES, ClientError, Dashboard, RedisUnavailable, headline_keys, static_files,
)

WINDOWS = ("7d", "30d", "60d")


def message(kpi, window, scope, scope_id, value, kind=None, numerator=None, denominator=None):
    return {"v": 1, "kpi": kpi, "window": window, "scope": scope, "scope_id": scope_id,
            "as_of": "2026-11-23T07:15:00Z", "value": value, "numerator": numerator, "denominator": denominator,
            "horizon": None, "kind": kind, "computed_at": "2026-11-23T07:15:00.412Z"}


class FakeRedis:
    """hscan_iter (MATCH `literal*`, as the dashboard sends) and hmget over one hash."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.fail = False
        self.scans = 0

    def put(self, hash_name: str, *messages: dict) -> None:
        table = self.hashes.setdefault(hash_name, {})
        for m in messages:
            table[kpi_key(m["kpi"], m["window"], m["scope"], m["scope_id"], m["kind"])] = orjson.dumps(m)

    async def hscan_iter(self, name, match, count):
        if self.fail:
            raise ConnectionError("Connection refused")
        self.scans += 1
        assert "\\" not in match.replace("\\|", "")  # only `|` is escaped in these patterns
        pattern = match.replace("\\", "")
        for key, body in list(self.hashes.get(name, {}).items()):
            if fnmatch.fnmatchcase(key, pattern):
                yield key.encode(), body

    async def hmget(self, name, keys):
        if self.fail:
            raise ConnectionError("Connection refused")
        table = self.hashes.get(name, {})
        return [table.get(key) for key in keys]


class FakeSink:
    def __init__(self, client, hash_name="p.kpi:latest"):
        self.client = client
        self.hash_name = hash_name


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def territory_counts(redis, counts: dict[str, int], window="30d"):
    redis.put("p.kpi:latest", *(message("active_accounts", window, "territory", t, n) for t, n in counts.items()))


@pytest.fixture
def redis():
    r = FakeRedis()
    r.put("p.kpi:latest",
          message("active_accounts", "30d", "global", "all", 120),
          message("active_accounts", "7d", "global", "all", 80),
          message("sales_amount", "30d", "global", "all", 12345.5),
          message("visit_to_order_ratio", "30d", "global", "all", 0.25, numerator=1, denominator=4),
          message("open_leads", None, "global", "all", 9),
          message("activities", "30d", "global", "all", 33, kind="all"),
          message("activities", "30d", "global", "all", 11, kind="call"),
          message("active_accounts", "30d", "region", "north", 70),
          message("open_leads", None, "region", "south", 4),  # a region known from leads only
          message("active_accounts", "30d", "rep", "r-1", 5))
    territory_counts(r, {"T1": 40, "T2": 30, "T|3": 50})
    return r


def run(coro):
    return asyncio.run(coro)


def test_the_page_shows_what_redis_holds_for_the_window(redis):
    board = Dashboard(WINDOWS, clock=Clock())
    board.sink = FakeSink(redis)
    data = run(board.data("30d"))
    assert data["window"] == "30d" and data["windows"] == list(WINDOWS)
    assert data["as_of"] == "2026-11-23T07:15:00Z"
    (company,) = data["scopes"]["global"]
    assert company["cells"]["active_accounts"]["value"] == 120
    assert company["cells"]["sales_amount"]["value"] == 12345.5
    assert company["cells"]["visit_to_order_ratio"] == {
        "key": "visit_to_order_ratio|30d|global|all", "value": 0.25, "numerator": 1, "denominator": 4,
        "as_of": "2026-11-23T07:15:00Z"}
    assert company["cells"]["open_leads"]["key"] == "open_leads|-|global|all"
    assert company["cells"]["activities:all"]["value"] == 33  # the `all` kind, not `call`
    assert [r["scope_id"] for r in data["scopes"]["region"]] == ["north", "south"]
    assert [r["scope_id"] for r in data["scopes"]["territory"]] == ["T1", "T2", "T|3"]
    t3 = data["scopes"]["territory"][2]
    assert t3["cells"]["active_accounts"]["key"] == "active_accounts|30d|territory|T%7C3"
    assert t3["cells"]["active_accounts"]["value"] == 50
    assert "rep" not in data["scopes"]
    # every value shown is one of Redis' messages under its own key
    shown = {cell["key"]: cell["value"] for rows in data["scopes"].values() for row in rows
             for cell in row["cells"].values()}
    stored = {key: orjson.loads(body)["value"] for key, body in redis.hashes["p.kpi:latest"].items()}
    assert shown and all(stored[key] == value for key, value in shown.items())
    assert set(shown) <= set(headline_keys("30d", {"global": ["all"], "region": ["north", "south"],
                                                   "territory": ["T1", "T2", "T|3"]}))
    assert run(board.data("7d"))["scopes"]["global"][0]["cells"]["active_accounts"]["value"] == 80


def test_trends_and_worst_movers_follow_the_samples(redis):
    clock = Clock()
    board = Dashboard(WINDOWS, clock=clock)
    board.sink = FakeSink(redis)
    run(board.sample())
    data = run(board.data("30d"))
    assert data["trend"]["samples"] == 1
    assert data["movers"]["rows"] == []  # one sample: no move yet
    clock.now += 5
    territory_counts(redis, {"T1": 31, "T2": 30, "T|3": 48})
    run(board.sample())
    data = run(board.data("30d"))
    assert data["trend"]["samples"] == 2
    assert len(data["trend"]["instants"]) == 2
    rows = data["movers"]["rows"]
    assert [(r["scope_id"], r["first"], r["last"], r["change"]) for r in rows] == [
        ("T1", 40.0, 31.0, -9.0), ("T|3", 50.0, 48.0, -2.0)]
    assert rows[0]["trend"] == [40.0, 31.0]
    assert rows[0]["change_ratio"] == pytest.approx(-9 / 40)
    t1 = data["scopes"]["territory"][0]
    assert t1["trends"] == {"active_accounts": [40.0, 31.0]}  # territories: active accounts only
    company = data["scopes"]["global"][0]
    assert company["trends"]["active_accounts"] == [120.0, 120.0]
    assert company["trends"]["activities:all"] == [33.0, 33.0]
    assert run(board.data("7d"))["movers"]["rows"] == []  # the 7d territory series never moved (absent)


def test_trended_series_are_bounded_and_global_comes_first():
    board = Dashboard(WINDOWS)
    keys = board.trended_keys({"global": ["all"], "region": ["r"], "territory": [f"T{i}" for i in range(3)]})
    per_scope = sum(len(WINDOWS) if h.windowed else 1 for h in HEADLINES)
    assert len(keys) == 2 * per_scope + 3 * len(WINDOWS)
    assert keys[0] == "active_accounts|7d|global|all"
    assert keys[-1] == "active_accounts|60d|territory|T2"
    assert len(set(keys)) == len(keys)
    assert board.ring.max_series * board.ring.capacity * 8 <= 8 * 1024 * 1024  # at most ~8 MB of samples


def test_scopes_are_rescanned_at_most_every_discover_seconds(redis):
    clock = Clock()
    board = Dashboard(WINDOWS, clock=clock)
    board.sink = FakeSink(redis)
    run(board.data("30d"))
    scans = redis.scans
    territory_counts(redis, {"T9": 1})
    clock.now += 1
    assert "T9" not in [r["scope_id"] for r in run(board.data("30d"))["scopes"]["territory"]]
    assert redis.scans == scans
    clock.now += dashboard_module.DISCOVER_SECONDS
    assert "T9" in [r["scope_id"] for r in run(board.data("30d"))["scopes"]["territory"]]


def test_a_bad_window_is_a_client_error():
    board = Dashboard(WINDOWS)
    assert board.window_of({}) == "30d"
    assert board.window_of({"window": "7d"}) == "7d"
    with pytest.raises(ClientError, match="one of 7d, 30d, 60d"):
        board.window_of({"window": "90d"})
    assert Dashboard(("1d", "2d")).window_of({}) == "1d"


def test_redis_down_is_unavailable_not_a_crash(redis, caplog):
    board = Dashboard(WINDOWS, clock=Clock())
    with pytest.raises(RedisUnavailable):
        run(board.data("30d"))  # not connected yet
    board.sink = FakeSink(redis)
    redis.fail = True
    with pytest.raises(RedisUnavailable, match="ConnectionError"):
        run(board.data("30d"))
    with caplog.at_level(logging.INFO, logger="stream.worker.dashboard"):
        run(board.sample())
        run(board.sample())
        redis.fail = False
        board.clock.now += 5
        run(board.sample())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None  # once per outage, no traceback
    assert any("succeeds again" in r.getMessage() for r in caplog.records)
    assert board.ring.samples == 1  # the failed samples left gaps, not zeros


def test_the_page_files_ship_with_the_package():
    files = static_files()
    html = files["dashboard.html"].decode()
    assert 'href="dashboard/dashboard.css"' in html and 'src="dashboard/dashboard.js"' in html
    assert "<script>" not in html  # the page's CSP allows no inline script
    assert b"dashboard/data" in files["dashboard.js"]

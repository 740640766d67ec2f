"""The HTTP API's shared parts (stream/worker/api.py): bearer-token access on an aiohttp server in
this process, client errors logged in one line, /kpi's query and paging over an in-memory hash."""

from __future__ import annotations

import asyncio
import logging
import random

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from stream.core.catalogue import kpi_key
from stream.core.config import ConfigError, SecretStr, ServiceSettings
from stream.worker.api import (
    KPI_DEFAULT_LIMIT, KPI_MAX_LIMIT, ClientError, KpiQuery, QuietClientErrors, SortedKeys, TokenCheck,
    access_middleware, decode_cursor, encode_cursor, key_may_match, kpi_page, parse_kpi_query,
)

TOKEN_A = "a" * 8 + "-token-one-0123"
TOKEN_B = "b" * 8 + "-token-two-4567"


# -- settings ----------------------------------------------------------------------------------------


def test_tokens_and_open_pages_from_the_environment():
    settings = ServiceSettings.from_env({"KPI_API_TOKENS": f" {TOKEN_A} ,{TOKEN_B},"})
    assert [t.value for t in settings.api_tokens] == [TOKEN_A, TOKEN_B]
    assert settings.api_open_pages == ("/metrics", "/health", "/ready", "/openapi.yaml")
    assert TOKEN_A not in repr(settings) and TOKEN_B not in repr(settings)
    assert {TOKEN_A, TOKEN_B} <= set(settings.secret_values())  # blanked out of every log line
    assert ServiceSettings.from_env({}).api_tokens == ()
    assert ServiceSettings.from_env({"KPI_API_OPEN_PAGES": ""}).api_open_pages == ()
    assert ServiceSettings.from_env({"KPI_API_OPEN_PAGES": "/health,/kpi"}).api_open_pages == ("/health", "/kpi")


@pytest.mark.parametrize("env, message", [
    ({"KPI_API_TOKENS": "short"}, "KPI_API_TOKENS: token 1 is shorter than 16"),
    ({"KPI_API_TOKENS": f"{TOKEN_A},with space in it 123"}, "KPI_API_TOKENS: token 2 has characters"),
    ({"KPI_API_OPEN_PAGES": "/metrics,/helth"}, "KPI_API_OPEN_PAGES names pages the worker does not serve: /helth"),
])
def test_bad_access_settings_name_the_variable_and_never_the_token(env, message):
    with pytest.raises(ConfigError) as caught:
        ServiceSettings.from_env(env)
    assert message in str(caught.value)
    assert "short" not in str(caught.value).replace("shorter", "") and "with space" not in str(caught.value)


# -- access ------------------------------------------------------------------------------------------


def test_token_check():
    check = TokenCheck((SecretStr(TOKEN_A), SecretStr(TOKEN_B)))
    assert check.accepts(f"Bearer {TOKEN_A}") and check.accepts(f"bearer {TOKEN_B}")
    for header in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN_A}", f"Bearer {TOKEN_A}x", TOKEN_A,
                   f"Bearer {TOKEN_A[:-1]}", "Bearer \udcff"):
        assert not check.accepts(header), header
    assert not TokenCheck(())


async def _client(tokens, open_pages) -> TestClient:
    async def page(request):
        return web.json_response({"path": request.path})

    app = web.Application(middlewares=[access_middleware(tuple(SecretStr(t) for t in tokens), open_pages)])
    for path in ("/kpi", "/metrics", "/health", "/ready", "/dashboard", "/dashboard/dashboard.js",
                 "/dashboard/data", "/table/x"):
        app.router.add_get(path, page)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_with_tokens_data_pages_need_one_and_open_pages_do_not(caplog):
    async def run():
        client = await _client([TOKEN_A, TOKEN_B], ("/metrics", "/health", "/ready"))
        try:
            out = {}
            for path in ("/kpi", "/dashboard/data", "/table/x", "/nowhere", "/metrics", "/health", "/ready",
                         "/dashboard", "/dashboard/dashboard.js"):
                for name, headers in (("none", {}), ("wrong", {"Authorization": "Bearer not-the-token-at-all"}),
                                      ("right", {"Authorization": f"Bearer {TOKEN_B}"})):
                    response = await client.get(path, headers=headers)
                    out[path, name] = response.status
                    if response.status == 401:
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        assert "error" in await response.json()
            return out
        finally:
            await client.close()

    with caplog.at_level(logging.DEBUG, logger="stream.worker.api"):
        status = asyncio.run(run())
    for path in ("/kpi", "/dashboard/data", "/table/x"):
        assert (status[path, "none"], status[path, "wrong"], status[path, "right"]) == (401, 401, 200), path
    assert (status["/nowhere", "none"], status["/nowhere", "right"]) == (401, 404)  # no page list for strangers
    for path in ("/metrics", "/health", "/ready", "/dashboard", "/dashboard/dashboard.js"):
        assert (status[path, "none"], status[path, "wrong"], status[path, "right"]) == (200, 200, 200), path
    refusals = [r for r in caplog.records if r.name == "stream.worker.api"]
    assert refusals and all(r.levelno == logging.INFO and not r.exc_info for r in refusals)
    assert not any(TOKEN_B in r.getMessage() or "not-the-token" in r.getMessage() for r in caplog.records)


def test_without_tokens_every_page_is_open_and_open_pages_can_be_closed():
    async def run():
        open_client = await _client([], ())
        closed = await _client([TOKEN_A], ())
        try:
            return ([(await open_client.get(p)).status for p in ("/kpi", "/metrics", "/dashboard/data")],
                    [(await closed.get(p)).status for p in ("/metrics", "/health", "/dashboard")])
        finally:
            await open_client.close()
            await closed.close()

    assert asyncio.run(run()) == ([200, 200, 200], [401, 401, 200])


# -- client errors in the log ------------------------------------------------------------------------


def test_a_too_long_url_is_a_4xx_in_one_info_line_and_a_server_error_keeps_its_traceback(caplog):
    async def page(request):
        return web.json_response({})

    async def broken(request):
        raise RuntimeError("a bug")

    async def run():
        logging.getLogger("aiohttp.server").addFilter(filter_ := QuietClientErrors())
        app = web.Application()
        app.router.add_get("/kpi", page)
        app.router.add_get("/broken", broken)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            long = (await client.get("/kpi?kpi=" + "x" * 100_000)).status
            header = (await client.get("/kpi", headers={"X-Big": "y" * 100_000})).status
            server = (await client.get("/broken")).status
            return long, header, server
        finally:
            await client.close()
            logging.getLogger("aiohttp.server").removeFilter(filter_)

    with caplog.at_level(logging.DEBUG):
        long, header, server = asyncio.run(run())
    assert 400 <= long < 500 and 400 <= header < 500
    assert server == 500
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    client_lines = [r for r in server_records if r.getMessage().startswith("client error")]
    assert len(client_lines) == 2, [r.getMessage()[:200] for r in server_records]
    assert all(r.levelno == logging.INFO and r.exc_info is None and len(r.getMessage()) < 400 for r in client_lines)
    (bug,) = [r for r in server_records if r not in client_lines]
    assert bug.levelno == logging.ERROR and bug.exc_info and "a bug" in str(bug.exc_info[1])


# -- /kpi query and paging ---------------------------------------------------------------------------


def _query(text: str):
    from multidict import MultiDict
    from urllib.parse import parse_qsl

    return MultiDict(parse_qsl(text, keep_blank_values=True))


def test_the_query():
    assert parse_kpi_query(_query("")) == KpiQuery({}, KPI_DEFAULT_LIMIT, None)
    cursor = encode_cursor("orders|30d|region|EAST")
    assert parse_kpi_query(_query(f"kpi=orders&scope=region&limit=5&cursor={cursor}")) == KpiQuery(
        {"kpi": "orders", "scope": "region"}, 5, "orders|30d|region|EAST")
    assert parse_kpi_query(_query(f"limit={KPI_MAX_LIMIT}")).limit == KPI_MAX_LIMIT
    for bad in ("limit=0", f"limit={KPI_MAX_LIMIT + 1}", "limit=-1", "limit=1.5", "limit=", "limit=%C2%B2",
                "cursor=", "cursor=!!", "cursor=" + "A" * 5000, "cursor=" + encode_cursor("x")[3:], "cursor=azE6A", "cursor=azE6=",
                "scopeid=x", "kpi=a&kpi=b", "limit=1&limit=2"):
        with pytest.raises(ClientError):
            parse_kpi_query(_query(bad))


def test_cursors_round_trip_any_key():
    for key in ("a", "active_accounts|30d|territory|JKT-01", "x|-|rep|Ω\x00é", "k" * 500):
        cursor = encode_cursor(key)
        assert cursor.replace("-", "").replace("_", "").isalnum() and decode_cursor(cursor) == key
    # a string of the cursors' form not made here is a position all the same, never an error
    for forged in ("azE6", "azE6_w", "azE6__8", "azE6" + "-" * 40):
        assert isinstance(decode_cursor(forged), str)


class FakeHash:
    def __init__(self, messages: list[dict]) -> None:
        self.table = {kpi_key(m["kpi"], m["window"], m["scope"], m["scope_id"], m["kind"]): orjson.dumps(m)
                      for m in messages}
        self.reads = 0

    async def keys(self):
        return list(self.table)

    async def count(self):
        return len(self.table)

    async def read(self, keys):
        self.reads += 1
        return [self.table.get(k) for k in keys]


def _message(kpi, window, scope, scope_id, value, kind=None):
    return {"v": 1, "kpi": kpi, "window": window, "scope": scope, "scope_id": scope_id, "as_of": "2026-11-23T07:15:00Z",
            "value": value, "numerator": None, "denominator": None, "horizon": None, "kind": kind,
            "computed_at": "2026-11-23T07:15:00Z"}


def _walk(store, limit, filters=None, between=None):
    out, cursor, pages = [], None, 0
    while True:
        query = KpiQuery(filters or {}, limit, None if cursor is None else decode_cursor(cursor))
        page = asyncio.run(kpi_page(SortedKeys(store.keys, store.count), store.read, query))
        assert page["count"] == len(page["values"]) <= limit
        out += page["values"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return out, pages
        if between:
            between(pages)


def _key(m):
    return kpi_key(m["kpi"], m["window"], m["scope"], m["scope_id"], m["kind"])


def test_paging_returns_every_value_once_in_key_order_with_filters():
    rng = random.Random(7)
    messages = [_message(kpi, window, scope, f"{scope[:1].upper()}-{n:03d}", rng.randint(0, 99))
                for kpi in ("orders", "active_accounts", "visits") for window in ("7d", "30d")
                for scope in ("region", "territory") for n in range(40)]
    store = FakeHash(messages)
    everything, pages = _walk(store, 37)
    keys = [_key(m) for m in everything]
    assert keys == sorted(store.table) and pages == -(-len(keys) // 37)
    for filters in ({"kpi": "orders"}, {"scope": "territory", "window": "7d"}, {"scope_id": "R-007"},
                    {"kpi": "visits", "scope": "region", "scope_id": "R-001"}, {"kpi": "nothing"}):
        got, _ = _walk(store, 11, filters)
        assert [_key(m) for m in got] == sorted(k for k, m in ((_key(m), m) for m in messages)
                                                if all(str(m[f]) == v for f, v in filters.items())), filters
    assert asyncio.run(kpi_page(SortedKeys(store.keys, store.count), store.read, KpiQuery({}, 5000)))["next_cursor"] is None


def test_paging_while_values_change_and_keys_come_and_go():
    rng = random.Random(11)
    store = FakeHash([_message("orders", "30d", "territory", f"T-{n:04d}", n) for n in range(0, 1000, 2)])
    present_throughout = set(store.table)

    def churn(page_number):
        for key in rng.sample(sorted(store.table), 20):  # values change
            store.table[key] = orjson.dumps({**orjson.loads(store.table[key]), "value": rng.random()})
        for _ in range(5):  # new keys appear
            n = rng.randrange(1, 1000, 2)
            m = _message("orders", "30d", "territory", f"T-{n:04d}", n)
            store.table[_key(m)] = orjson.dumps(m)

    got, _ = _walk(store, 25, between=churn)
    keys = [_key(m) for m in got]
    assert len(keys) == len(set(keys))
    assert present_throughout <= set(keys) <= set(store.table)


def test_a_filter_on_key_segments_reads_only_the_matching_values():
    messages = [_message(kpi, window, scope, scope_id, 1)
                for kpi in ("orders", "visits") for window in ("7d", "mtd", "2026-11", None)
                for scope, scope_id in (("global", "all"), ("territory", "T|1"), ("territory", "T%2"))]
    store = FakeHash(messages)
    for filters in ({"scope_id": "T|1"}, {"window": "mtd", "scope": "territory"}, {"window": "None"},
                    {"kpi": "visits", "scope_id": "T%2"}):
        wanted = sorted(_key(m) for m in messages if all(str(m[f]) == v for f, v in filters.items()))
        assert sorted(k for k in store.table if key_may_match(k, filters)) == wanted, filters
        got, _ = _walk(store, 1000, filters)
        assert [_key(m) for m in got] == wanted


def test_keys_are_listed_again_when_their_count_moves_or_they_are_old_and_once_for_requests_arriving_together():
    listings = []
    now = [100.0]
    table = ["b", "a"]

    async def keys():
        listings.append(now[0])
        await asyncio.sleep(0)
        return list(table)

    async def count():
        return len(table)

    sorted_keys = SortedKeys(keys, count, max_age=30.0, clock=lambda: now[0])

    async def together():
        return await asyncio.gather(*(sorted_keys() for _ in range(5)))

    assert asyncio.run(together()) == [["a", "b"]] * 5 and listings == [100.0]
    now[0] = 110.0
    assert asyncio.run(sorted_keys()) == ["a", "b"] and listings == [100.0]  # nothing new: no listing
    table.append("c")  # a key published since: seen at once
    assert asyncio.run(sorted_keys()) == ["a", "b", "c"] and listings == [100.0, 110.0]
    now[0] = 140.0
    asyncio.run(sorted_keys())
    assert listings == [100.0, 110.0, 140.0]  # max_age: listed again whatever the count

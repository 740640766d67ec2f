"""The worker's HTTP API against a real worker, broker and Redis, with KPI_API_TOKENS set: the data
pages need a token and the open pages do not; /kpi paged while events are being produced returns
every key exactly once; every page answers as stream/worker/openapi.yaml says (schemathesis); and
client errors are 4xx with no ERROR line and no traceback in the worker's log."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
import threading
import time

import orjson
import pytest

from stream.core.catalogue import kpi_key
from stream.core.timeparse import format_rfc3339_us
from stream.devtools import generator
from tests.e2e.harness import WorkerProcess, kpi_all, unique_names, wait_until, worker_env

pytestmark = pytest.mark.e2e

TOKENS = (secrets.token_urlsafe(32), secrets.token_hex(24))
OPEN_PAGES = "/health,/ready,/openapi.yaml"  # /metrics needs the token here (default: open)


def _key(m: dict) -> str:
    return kpi_key(m["kpi"], m["window"], m["scope"], m["scope_id"], m.get("horizon") or m.get("kind"))


@pytest.fixture(scope="module")
def api(kafka_broker, redis_server, tmp_path_factory):
    import redis

    tmp = tmp_path_factory.mktemp("http-api")
    config = generator.GeneratorConfig(seed=3939, events=6000)
    messages = list(generator.generate(config))
    as_of = format_rfc3339_us(generator.now_us(config))
    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp / "state", KPI_CLOCK=as_of,
                     KPI_API_TOKENS=",".join(TOKENS), KPI_API_OPEN_PAGES=OPEN_PAGES)
    worker = WorkerProcess(env, tmp / "worker.log", token=TOKENS[1]).start()
    client = redis.Redis.from_url(redis_server.url)
    first, rest = messages[:3600], messages[3600:]
    asyncio.run(generator.produce(first, kafka_broker.bootstrap, topic_prefix=prefix))
    hash_name = f"{prefix}kpi:latest"
    wait_until(lambda: client.hlen(hash_name) > 1000 or [client.hlen(hash_name), worker.alive() or worker.log_tail()],
               timeout=180, interval=1, what="values in Redis")
    # the first events all published: the key count holds still for three seconds
    counts: list[int] = []

    def settled():
        counts.append(client.hlen(hash_name))
        return len(counts) > 3 and len(set(counts[-4:])) == 1 or [counts[-1]]

    wait_until(settled, timeout=180, interval=1, what="the first events' keys all in Redis")
    try:
        yield {"worker": worker, "redis": client, "hash": hash_name, "rest": rest, "prefix": prefix,
               "bootstrap": kafka_broker.bootstrap}
    finally:
        worker.stop()


def test_data_pages_need_a_token_and_open_pages_do_not(api):
    worker = api["worker"]
    for path in ("/kpi?limit=5", "/dashboard/data", "/metrics", "/table/", "/nothing-here"):
        assert worker.get(path, token=None)[0] == 401, path
        assert worker.get(path, token=secrets.token_urlsafe(32))[0] == 401, path
        assert worker.get(path, token=TOKENS[0][:-1])[0] == 401, path
    for token in TOKENS:  # either configured token
        for path in ("/kpi?limit=5", "/dashboard/data", "/metrics"):
            status, body = worker.get(path, token=token)
            assert status == 200, (path, body[:200])
    assert worker.get("/nothing-here")[0] == 404  # with a token, an unknown page is just unknown
    for path in ("/health", "/ready", "/openapi.yaml", "/dashboard", "/dashboard/dashboard.js"):
        assert worker.get(path, token=None)[0] == 200, path
    page = orjson.loads(worker.get("/kpi?limit=5")[1])
    assert page["count"] == 5 and page["next_cursor"]


def test_paging_while_events_are_produced_returns_every_key_exactly_once(api):
    worker, client, hash_name = api["worker"], api["redis"], api["hash"]
    before = {k.decode(): v for k, v in client.hgetall(hash_name).items()}
    producing = threading.Thread(target=lambda: asyncio.run(generator.produce(
        api["rest"], api["bootstrap"], rate_per_second=100, topic_prefix=api["prefix"])), daemon=True)
    producing.start()
    limit = max(40, len(before) // 150)  # ~150 pages, however many keys (periods multiply them)
    pause = min(0.2, 12.0 / (len(before) / limit))  # the walk spans the production and the worker's rounds
    returned: list[str] = []
    cursor, pages, changed_during, pages_while_producing = None, 0, 0, 0
    while True:
        pages_while_producing += producing.is_alive()
        status, body = worker.get(f"/kpi?limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body[:300]
        page = orjson.loads(body)
        assert page["count"] == len(page["values"]) <= limit
        returned += [_key(m) for m in page["values"]]
        pages += 1
        changed_during += sum(1 for m in page["values"]
                              if _key(m) in before and orjson.loads(before[_key(m)])["value"] != m["value"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        time.sleep(pause)
    producing.join(timeout=120)
    after = {k.decode(): v for k, v in client.hgetall(hash_name).items()}

    assert len(returned) == len(set(returned)), "a key came twice"
    assert set(before) <= set(returned), f"missing: {sorted(set(before) - set(returned))[:10]}"
    assert set(returned) <= set(after)
    assert returned == sorted(returned)  # the keys' order
    assert pages >= len(before) // limit
    # the values really moved under the walk: pages showed values other than at its start
    assert pages_while_producing >= min(pages // 3, 30) and changed_during > 0, (pages, pages_while_producing,
                                                                                 changed_during)
    assert sum(1 for k in before if after[k] != before[k]) > 0
    # and with a filter: exactly the matching keys
    regions = kpi_all(worker, "scope=region", limit=7)
    region_keys = [_key(m) for m in regions]
    assert len(region_keys) == len(set(region_keys)) and all(m["scope"] == "region" for m in regions)
    assert set(region_keys) >= {k for k in before if k.split("|")[2] == "region"}


def test_every_page_answers_as_the_openapi_description_says(api, tmp_path):
    worker = api["worker"]
    status, description = worker.get("/openapi.yaml", token=None)
    assert status == 200
    from stream.worker.pages import openapi_description

    assert description == openapi_description()
    command = [sys.executable, "-m", "schemathesis.cli", "run", worker.url("/openapi.yaml"),
               "--url", worker.url(""), "--checks", "all", "--header", f"Authorization: Bearer {TOKENS[0]}",
               "--max-examples", "40", "--seed", "39", "--workers", "1", "--generation-database", "none",
               "--request-timeout", "10", "--no-color", "--phases", "examples,coverage,fuzzing",
               "--report", "junit", "--report-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert TOKENS[0] not in worker.log_path.read_text(errors="replace")
    assert worker.alive(), worker.log_tail()


def _raw_get(worker: WorkerProcess, target: str, headers: str = "") -> int:
    """A GET written by hand (urllib refuses some of these URLs); the status code."""
    with socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def test_client_errors_are_4xx_with_one_info_line_and_no_traceback(api):
    worker = api["worker"]
    start = worker.log_path.stat().st_size
    auth = f"Authorization: Bearer {TOKENS[0]}\r\n"
    statuses = {
        "too-long url": _raw_get(worker, "/kpi?kpi=" + "x" * 100_000, auth),
        "too-long header": _raw_get(worker, "/kpi", auth + "X-Big: " + "y" * 100_000 + "\r\n"),
        "bad cursor": worker.get("/kpi?cursor=not*a*cursor")[0],
        "forged cursor": worker.get("/kpi?cursor=" + "QUJD")[0],
        "bad limit": worker.get("/kpi?limit=0")[0],
        "huge limit": worker.get("/kpi?limit=99999999999999999999")[0],
        "unknown parameter": worker.get("/kpi?scopeid=JKT-01")[0],
        "repeated parameter": worker.get("/kpi?kpi=orders&kpi=visits")[0],
        "invalid utf-8": _raw_get(worker, "/kpi?kpi=%FF%FE", auth),
        "nul byte": worker.get("/kpi?scope_id=%00")[0],
        "bad window": worker.get("/dashboard/data?window=90d")[0],
        "unknown page": worker.get("/nothing/here")[0],
        "no token": worker.get("/kpi", token=None)[0],
    }
    wrong = {name: status for name, status in statuses.items() if not 400 <= status < 500}
    assert wrong == {"nul byte": 200, "invalid utf-8": 200}, wrong  # filters nothing matches (yarl decodes %FF as U+FFFD)
    assert worker.get("/ready")[0] == 200 and worker.alive()
    time.sleep(0.5)
    with open(worker.log_path, "rb") as log:
        log.seek(start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written[-4000:]
    assert not [line for line in written.splitlines() if " ERROR " in line or " CRITICAL " in line], written[-4000:]
    client_lines = [line for line in written.splitlines() if "client error" in line or "refused GET" in line]
    assert len(client_lines) >= 8 and all(" INFO " in line and len(line) < 600 for line in client_lines), client_lines
    assert any("client error 400 from" in line for line in client_lines)  # the parser's, too-long URL

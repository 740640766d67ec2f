"""The dashboard page in a real browser: Debian's headless chromium loads /dashboard from a worker
running against the real broker and Redis, with generated traffic; every value the page shows
equals /kpi, the worst-moving territory is the one the test emptied, the console stays clean, and
screenshots are kept (tests/artifacts/dashboard.png, dashboard-phone.png; the test prints the paths).
The worker requires an API token (KPI_API_TOKENS): the page is opened as /dashboard#token=..., and
without it says it needs one."""

from __future__ import annotations

import secrets
import shutil
import time
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import orjson
import pytest

from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from stream.devtools import generator
from stream.devtools.generator import Message
from stream.worker.dashboard import DISCOVER_SECONDS, HEADLINES, SAMPLE_SECONDS
from tests.e2e.harness import REPO, OracleCheck, WorkerProcess, kpi_all, unique_names, wait_until, worker_env

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
UNITS = {h.kpi: h.unit for h in HEADLINES}


def shown_text(kpi: str, value) -> str:
    """What dashboard.js shows for a value (Intl.NumberFormat en-US: half away from zero on the
    exact binary value, as Decimal(float) is)."""
    if value is None:
        return "—"
    unit = UNITS[kpi]
    if unit == "ratio":
        return f"{Decimal(value * 100).quantize(Decimal('0.1'), ROUND_HALF_UP):,.1f}%"
    if unit == "money":
        return f"{Decimal(value).quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"
    return f"{Decimal(value).quantize(Decimal('1'), ROUND_HALF_UP):,.0f}"


def kpi_values(worker: WorkerProcess) -> dict[str, object]:
    from tests.kpi_compare import values_by_key

    return {key: record["value"] for key, record in values_by_key(kpi_all(worker)).items()}


def dashboard_data(worker: WorkerProcess, window: str = "30d") -> dict:
    status, body = worker.get(f"/dashboard/data?window={window}")
    assert status == 200, body
    return orjson.loads(body)


def moves_out_of(territory: str, messages: list[Message], as_of_us: int) -> tuple[list[Message], str]:
    """outlet.updated events moving every outlet now in `territory` to another territory of its
    region, at `as_of`: its active accounts fall (to zero, unless an outlet moves again then)."""
    latest: dict[str, tuple[int, dict]] = {}
    for message in messages:
        try:
            doc = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or doc.get("type") not in ("outlet.onboarded", "outlet.updated"):
            continue
        at = parse_rfc3339_us(doc.get("occurred_at")) if isinstance(doc.get("occurred_at"), str) else None
        if at is not None and (doc["outlet_id"] not in latest or at >= latest[doc["outlet_id"]][0]):
            latest[doc["outlet_id"]] = (at, doc)
    region_of = {doc["territory"]: doc["region"] for _, doc in latest.values()}
    target = sorted(t for t, r in region_of.items() if r == region_of[territory] and t != territory)[0]
    moves = []
    for n, (_, doc) in enumerate(sorted(latest.values(), key=lambda item: item[1]["outlet_id"])):
        if doc["territory"] != territory:
            continue
        moved = dict(doc, type="outlet.updated", event_id=f"dashboard-move-{n}", territory=target,
                     occurred_at=format_rfc3339_us(as_of_us))
        moves.append(Message("sales.outlets", doc["outlet_id"].encode(), orjson.dumps(moved)))
    assert moves, territory
    return moves, target


def test_the_dashboard_in_a_browser_shows_the_values_of_kpi(kafka_broker, redis_server, tmp_path):
    import redis
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium") or Path(CHROMIUM).exists(), "chromium missing: run scripts/setup.sh"
    config = generator.GeneratorConfig(seed=3434, events=6000)
    messages = list(generator.generate(config))
    as_of_us = generator.now_us(config)
    as_of = format_rfc3339_us(as_of_us)
    prefix, app_id = unique_names()
    token = secrets.token_urlsafe(32)
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                     KPI_CLOCK=as_of, KPI_API_TOKENS=token)
    worker = WorkerProcess(env, tmp_path / "worker.log", token=token).start()
    check = OracleCheck(kafka_broker.bootstrap, redis.Redis.from_url(redis_server.url), prefix, as_of)
    try:
        check.produce(messages)
        check.wait_for_redis(worker)
        settled = kpi_values(worker)
        territories = {k.split("|")[3]: v for k, v in settled.items() if k.startswith("active_accounts|30d|territory|")}
        emptied = max(sorted(territories), key=lambda t: territories[t])

        # The trend ring samples Redis from a worker's start: this one's holds the values rising
        # and falling while the first events were applied (an outlet's orders before its
        # onboarding count in `unassigned`). A restarted worker's ring starts from the settled values.
        worker.stop()
        worker = WorkerProcess(env, tmp_path / "worker-restarted.log", token=token).start()
        wait_until(lambda: worker.get("/ready")[0] == 200 or [worker.log_tail(3)], timeout=90, what="worker ready")

        # A few samples of the settled values, then every outlet leaves one territory: it must
        # lead the worst movers.
        def samples_after(count: int, since: float):
            def check_samples():
                data = dashboard_data(worker)
                taken = [t for t in data["trend"]["instants"] if parse_rfc3339_us(t) / 1e6 > since]
                return [] if len(taken) >= count else [f"{len(taken)} samples since {since}"]
            return check_samples

        def settled_in_trend():
            # territories enter the ring when its directory of Redis scopes is rescanned
            rows = {row["scope_id"]: row for row in dashboard_data(worker)["scopes"]["territory"]}
            trend = rows[emptied]["trends"].get("active_accounts", []) if emptied in rows else []
            return [] if trend[-2:] == [territories[emptied]] * 2 else [f"{emptied} trend {trend[-2:]}"]

        wait_until(settled_in_trend, timeout=DISCOVER_SECONDS + 6 * SAMPLE_SECONDS, interval=1,
                   what="the settled territory sampled twice")
        moves, target = moves_out_of(emptied, check.produced, as_of_us)
        check.produce(moves)
        check.wait_for_redis(worker)
        wait_until(samples_after(1, time.time()), timeout=4 * SAMPLE_SECONDS, interval=1, what="a sample after the moves")
        data = dashboard_data(worker)
        movers = data["movers"]["rows"]
        assert movers and movers[0]["scope_id"] == emptied, movers
        expected = kpi_values(worker)
        now_there = expected[f"active_accounts|30d|territory|{emptied}"]
        assert now_there < territories[emptied]
        assert (movers[0]["last"], movers[0]["change"]) == (now_there, now_there - territories[emptied])
        shown_territories = {row["scope_id"] for row in data["scopes"]["territory"]}
        assert shown_territories == {k.split("|")[3] for k in expected if k.startswith("active_accounts|30d|territory|")}

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                problems: list[str] = []
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(worker.url(f"/dashboard?window=30d#token={token}"))
                page.wait_for_selector('#status[data-state="ok"]', timeout=20_000)
                # the token left the address bar (it stays in the tab's sessionStorage)
                assert token not in page.url and page.url.endswith("/dashboard?window=30d"), page.url
                for window in ("30d", "7d"):
                    if window != "30d":
                        page.click(f'#windows button:text-is("{window}")')
                        page.wait_for_selector(f'#windows button[aria-pressed="true"]:text-is("{window}")')
                        page.wait_for_function(
                            f"document.querySelector('#company [data-key]').dataset.key.includes('|{window}|')")
                    cells = page.eval_on_selector_all(
                        "[data-key]", "els => els.map(e => [e.dataset.key, e.dataset.value, e.textContent])")
                    kpi_now = kpi_values(worker)
                    assert kpi_now == expected  # settled: nothing moved while the page was read
                    keys = {key for key, _, _ in cells}
                    assert f"active_accounts|{window}|global|all" in keys and "open_leads|-|global|all" in keys
                    assert any(k.startswith(f"active_accounts|{window}|territory|") for k in keys)
                    assert any(k.startswith(f"sales_amount|{window}|region|") for k in keys)
                    mismatches = [
                        (key, raw, text, kpi_now.get(key)) for key, raw, text in cells
                        if key not in kpi_now or orjson.loads(raw) != kpi_now[key]
                        or text != shown_text(key.split("|")[0], kpi_now[key])
                    ]
                    assert mismatches == [], mismatches[:20]
                    if window == "30d":
                        first_mover = page.locator("#movers-table tr[data-scope-id]").first
                        assert first_mover.get_attribute("data-scope-id") == emptied
                page.click('#windows button:text-is("30d")')
                page.wait_for_selector('#windows button[aria-pressed="true"]:text-is("30d")')
                page.wait_for_function("document.querySelector('#company [data-key]').dataset.key.includes('|30d|')")
                screenshot = ARTIFACTS / "dashboard.png"
                page.screenshot(path=str(screenshot), full_page=True)

                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                         is_mobile=True, has_touch=True)
                phone.on("console", lambda m: problems.append(f"phone console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
                phone.on("pageerror", lambda e: problems.append(f"phone page error: {e}"))
                phone.goto(worker.url(f"/dashboard#token={token}"))
                phone.wait_for_selector('#status[data-state="ok"]', timeout=20_000)
                # the page itself never scrolls sideways on a phone: only the wide tables do, inside their frames
                assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                phone_shot = ARTIFACTS / "dashboard-phone.png"
                phone.screenshot(path=str(phone_shot), full_page=True)
                assert problems == []

                # without the token (a new browser context: empty sessionStorage) the page loads
                # and says it needs one; the browser logs the refused request, nothing else
                stranger = browser.new_context().new_page()
                refused: list[str] = []
                stranger.on("pageerror", lambda e: refused.append(f"page error: {e}"))
                stranger.goto(worker.url("/dashboard"))
                stranger.wait_for_selector('#status[data-state="error"]', timeout=20_000)
                assert "needs a token" in stranger.inner_text("#status")
                assert stranger.locator("[data-key]").count() == 0 and refused == []
            finally:
                browser.close()
        print(f"\ndashboard screenshots: {screenshot} {phone_shot}")

        # the data pages refuse a missing or wrong token
        assert worker.get("/dashboard/data", token=None)[0] == 401
        assert worker.get("/dashboard/data", token=secrets.token_urlsafe(32))[0] == 401
        assert worker.get("/kpi", token=None)[0] == 401
        # client errors are 4xx, and none leaves a traceback in the log
        assert worker.get("/dashboard/data?window=90d")[0] == 400
        assert worker.get("/dashboard/nothing-here")[0] == 404
        request = urllib.request.Request(worker.url("/dashboard"), data=b"x", method="POST")
        try:
            urllib.request.urlopen(request, timeout=5)
            status = 200
        except urllib.error.HTTPError as error:
            status = error.code
        assert status == 405
        assert worker.alive(), worker.log_tail()
        log = worker.log_path.read_text(errors="replace")
        assert "Traceback" not in log, worker.log_tail()
        assert token not in log
    finally:
        worker.stop()
        shutil.copy(worker.log_path, ARTIFACTS / "dashboard-worker.log") if ARTIFACTS.exists() else None

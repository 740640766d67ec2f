"""The worker's HTTP pages on Faust's web server: /metrics, /health, /ready, /kpi and
/openapi.yaml (their description, stream/worker/openapi.yaml). Access, client errors and /kpi's
paging: stream/worker/api.py."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.worker.api import KPI_FILTERS, ClientError, SortedKeys, client_error, kpi_page, parse_kpi_query

if TYPE_CHECKING:
    from stream.worker.app import KpiWorker

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
__all__ = ["KPI_FILTERS", "add_pages", "openapi_description"]


def openapi_description() -> bytes:
    return resources.files("stream.worker").joinpath("openapi.yaml").read_bytes()


def add_pages(app, worker: "KpiWorker") -> None:
    description = openapi_description()

    @app.page("/metrics")
    async def metrics_page(view, request):
        # `?name[]=a&name[]=b`: only those families, as prometheus_client's own handler allows --
        # the full exposition holds a series per exported KPI and scope (~10 ms to render)
        names = request.query.getall("name[]", [])
        registry = worker.metrics.registry
        worker.tally.flush()
        exposition = generate_latest(registry.restricted_registry(names) if names else registry)
        # aiohttp takes the charset separately from the content type
        return view.bytes(exposition, content_type=METRICS_CONTENT_TYPE)

    @app.page("/health")
    async def health_page(view, request):
        return view.json({"status": "ok"})

    @app.page("/ready")
    async def ready_page(view, request):
        state = worker.readiness()
        ready = state["recovered"] and not state["rebalancing"] and state["kafka"]
        worker.metrics.ready.set(1 if ready else 0)
        # Redis down does not make the worker unready: it keeps consuming and catches Redis up
        # later; the state is reported so operators can see it.
        return view.json({"ready": ready, **state}, status=200 if ready else 503)

    @app.page("/openapi.yaml")
    async def openapi_page(view, request):
        return view.bytes(description, headers={"Content-Type": "application/yaml; charset=utf-8"})

    async def redis_keys() -> list[str]:
        return await worker.scope_stage.redis.keys()

    async def redis_key_count() -> int:
        return await worker.scope_stage.redis.key_count()

    sorted_keys = SortedKeys(redis_keys, redis_key_count)

    @app.page("/kpi")
    async def kpi_values_page(view, request):
        try:
            query = parse_kpi_query(request.query)
        except ClientError as error:
            return client_error(request, error)
        redis = worker.scope_stage.redis
        if redis is None:
            return view.json({"error": "redis not connected"}, status=503)
        try:
            page = await kpi_page(sorted_keys, redis.read, query)
        except Exception as error:  # noqa: BLE001
            return view.json({"error": f"redis unavailable: {type(error).__name__}: {error}"}, status=503)
        return view.json(page)

"""The worker's HTTP pages on Faust's web server: /metrics, /health, /ready and /kpi."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from stream.worker.app import KpiWorker

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
KPI_FILTERS = ("kpi", "window", "scope", "scope_id", "horizon", "kind")


def add_pages(app, worker: "KpiWorker") -> None:
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

    @app.page("/kpi")
    async def kpi_page(view, request):
        filters = {name: request.query.get(name) for name in KPI_FILTERS}
        redis = worker.scope_stage.redis
        if redis is None:
            return view.json({"error": "redis not connected"}, status=503)
        try:
            latest = await redis.read_all()
        except Exception as error:  # noqa: BLE001
            return view.json({"error": f"redis unavailable: {error}"}, status=503)
        rows = [
            message for message in latest.values()
            if all(wanted is None or str(message.get(name)) == wanted for name, wanted in filters.items())
        ]
        rows.sort(key=lambda m: (m["kpi"], m["window"] or "", m["scope"], m["scope_id"]))
        return view.json({"count": len(rows), "values": rows})

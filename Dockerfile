# kpi-stream worker image.
#   docker build -t kpi-stream:0.1.0 .
#   docker run --rm -p 6066:6066 -e KAFKA_BOOTSTRAP_SERVERS=kafka:9092 -e REDIS_URL=redis://redis:6379/0 kpi-stream:0.1.0
# Settings are environment variables (stream/core/config.py, README "Configuration"); secrets
# (KAFKA_PASSWORD, REDIS_PASSWORD) come from the runtime environment, never from the image.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream ./stream
# with the rocksdb extra: KPI_STORE=rocksdb:// works in this image (docs/operations.md "Scaling out")
RUN pip install ".[rocksdb]"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KPI_STATE_DIR=/var/lib/kpi-stream \
    KPI_WEB_PORT=6066
RUN groupadd --system --gid 10001 kpi \
 && useradd --system --uid 10001 --gid kpi --home-dir /var/lib/kpi-stream --no-create-home --shell /usr/sbin/nologin kpi \
 && mkdir -p /var/lib/kpi-stream \
 && chown kpi:kpi /var/lib/kpi-stream
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/kpi-stream
# /metrics, /kpi, /health, /ready
EXPOSE 6066
# Liveness of the web server (the generator and replay commands have none: disable it there).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KPI_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["kpi-stream"]
CMD ["worker"]

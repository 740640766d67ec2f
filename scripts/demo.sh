#!/usr/bin/env bash
# Set everything up (idempotent) and run the main job: a local Kafka broker, Redis, one worker
# and the live generator, on free ports. Ctrl-C or SIGTERM stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/kpi-stream demo "$@"

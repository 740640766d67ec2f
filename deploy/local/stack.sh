#!/usr/bin/env bash
# Start or stop the local Kafka broker (KRaft, jars from Maven Central) and Redis on free ports.
#   deploy/local/stack.sh up   [RUN_DIR]   -> prints bootstrap/url/pids, writes RUN_DIR/stack.json
#   deploy/local/stack.sh down [RUN_DIR]   -> stops exactly those pids
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh
exec .venv/bin/kpi-stream stack "${1:?up or down}" --run-dir "${2:-run/stack}"

#!/usr/bin/env bash
# Set everything up (idempotent) and run the whole test suite: unit, integration (real Kafka
# broker and Redis started by the tests on free ports) and end-to-end (real workers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest -q "$@"

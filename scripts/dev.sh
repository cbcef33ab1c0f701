#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs the whole stack locally: Redis,
# two server replicas and Envoy (REST on :8080/api/v1/, gRPC on :8081).
# Extra arguments go to `taskapi dev` (see `.venv/bin/taskapi dev --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/taskapi dev "$@"

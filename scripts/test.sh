#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh --dev) and runs the full test suite:
# proto lint/format/freshness/breaking checks, unit, integration (real gRPC
# server, real Redis) and end-to-end (real Envoy) tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest "$@"

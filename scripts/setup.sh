#!/usr/bin/env bash
# Installs everything Task API needs on a fresh machine with Python 3.11, pip, npm and apt.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--dev]
#   --dev  also the test and generation toolchain (pytest, grpcio-tools, buf, browsers, Go).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
[[ "${1:-}" == "--dev" ]] && dev=true

# System packages, from Debian. Only what is missing is installed.
apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
if [[ ${#apt_packages[@]} -gt 0 ]]; then
  echo "setup: apt-get install ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# Python: one virtual environment in the checkout, the project installed editable.
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
extras=""
$dev && extras="[dev]"
stamp=".venv/.installed$extras"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "setup: pip install -e .$extras"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import grpc, server" # fail here, not later, if the install did not take
  touch "$stamp"
fi

# Node tooling (buf), pinned by package-lock.json.
if $dev && [[ ! -x node_modules/.bin/buf || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

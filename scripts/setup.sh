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
# redis-sentinel: the Sentinel failover tests (tests/integration/test_redis_sentinel.py) run real sentinels.
command -v redis-sentinel >/dev/null || apt_packages+=(redis-sentinel)
if $dev; then
  # Client toolchains (clients/go, clients/web tests), wrk for bench/, and Prometheus. Go is built GOPATH-style and
  # offline against these Debian packages. golang-github-golang-protobuf-1-5-dev is
  # named explicitly: grpc's codec goes through github.com/golang/protobuf, and the
  # 1.3 package apt would otherwise pick cannot marshal protoc-gen-go 1.28 messages.
  dev_apt=(golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev
           golang-google-genproto-dev golang-github-golang-protobuf-1-5-dev chromium wrk
           prometheus)  # promtool checks deploy/prometheus/; a real Prometheus scrapes a stack in tests
  for package in "${dev_apt[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || apt_packages+=("$package")
  done
fi
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
# Strict editable mode: setuptools links every module into build/ under its installed name
# (taskapi.server, taskapi.interceptors, ...), which mypy and import-linter can follow. The
# links are made at install time, so a new or removed module needs a reinstall: the stamp
# holds the package file list as well as the project files.
layout=$( (cat pyproject.toml clients/python/pyproject.toml; find server interceptors envoy clients/python/taskapi \
           clients/python/taskapi_client -type f \( -name '*.py' -o -name '*.pyi' -o -name '*.lua' -o -name '*.in' \
           -o -name '*.binpb' -o -name py.typed \) | LC_ALL=C sort) | sha1sum | cut -c1-40)
stamp=".venv/.installed$extras"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$layout" ]]; then
  echo "setup: pip install -e ./clients/python -e .$extras"
  # The log is shown only on failure: pip's build warnings are noise on every first run.
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=strict \
      -e ./clients/python -e ".$extras" > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
  fi
  echo "$layout" > "$stamp"
fi

# Node tooling (buf, protoc-gen-es, Connect, playwright-core, dclint for deploy/compose.yaml),
# pinned by package-lock.json. The deployment checks' Python tools (hadolint, kubernetes-validate,
# jsonschema) are dev extras in pyproject.toml.
# playwright-core drives Debian's /usr/bin/chromium: never `npx playwright install`.
if $dev && [[ ! -x node_modules/.bin/buf || ! -x node_modules/.bin/protoc-gen-es || ! -x node_modules/.bin/dclint ||
              package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The browser app: Vite builds clients/web into clients/web/dist (hashed asset names),
# which `taskapi dev` serves under /web/. Offline: it needs only node_modules. Rebuilt
# only when a source is newer than the last build.
web=clients/web
if command -v npm >/dev/null; then
  if [[ ! -x node_modules/.bin/vite || package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "setup: npm ci"
    npm ci --no-audit --no-fund --loglevel=error
  fi
  if [[ ! -f $web/dist/index.html || -n "$(find $web/index.html $web/vite.config.js $web/src package-lock.json \
        -newer $web/dist/index.html -print -quit)" ]]; then
    echo "setup: build $web"
    npm run --silent --prefix "$web" build
  fi
else
  echo "setup: npm is not installed: the browser app ($web) is not built, so taskapi dev cannot serve it" >&2
fi

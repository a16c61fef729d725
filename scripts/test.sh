#!/usr/bin/env bash
# test.sh — run every test on this machine: installs what is missing (Debian's influxdb, the project and its
# test tools in .venv, real Home Assistant for the real_ha suite when its harness is present), checks types
# and style, then runs pytest. Extra arguments go to pytest (e.g. -k e2e, -m "not real_ha").
set -euo pipefail
source "$(dirname "$0")/setup.sh"
ensure_apt influxdb victoria-metrics docker-compose chromium chromium-driver nats-server
ensure_venv test
cd "$ROOT"

note "mypy --strict"
"$VENV/bin/python" -m mypy
note "ruff"
"$VENV/bin/python" -m ruff check ha_ingestor tests

note "pytest $*"
exec "$VENV/bin/python" -m pytest "$@"

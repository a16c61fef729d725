#!/usr/bin/env bash
# demo.sh — the main job on the embedded defaults: `ha-ingestor up --demo` (a simulated home, the SQLite
# store under ./data/demo). Open http://127.0.0.1:8003/ for the dashboard; Ctrl-C stops it. Extra arguments
# go to `ha-ingestor up` (e.g. --demo-rate 200).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
ensure_venv
cd "$ROOT"
exec "$VENV/bin/ha-ingestor" up --demo "$@"

#!/usr/bin/env bash
# setup.sh — install what the project needs on Debian, idempotently; sourced by demo.sh and test.sh.
#
#   ensure_apt PKG...      apt-get install the Debian packages that are missing (never starts their daemons)
#   ensure_venv [EXTRAS]   .venv with Python >= 3.11 and this project installed (editable), e.g. "test"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HA_INGESTOR_VENV:-$ROOT/.venv}

note() { printf '[setup] %s\n' "$*" >&2; }

ensure_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { note "need root or sudo to install: ${missing[*]}"; return 1; }
    sudo=(sudo)
  fi
  note "apt-get install ${missing[*]}"
  # Maintainer scripts would start system services (influxd, nats-server): policy-rc.d exit 101 forbids
  # that; the tests and the demo start their own private instances.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    "${sudo[@]}" sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    made_policy=1
  fi
  local rc=0
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || rc=$?
  if [ "$rc" = 0 ]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
      >/dev/null || rc=$?
  fi
  [ "$made_policy" = 1 ] && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
  return "$rc"
}

find_python() {
  local c
  for c in "${HA_INGESTOR_PYTHON:-}" python3.11 python3 python3.12 python3.13; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null && "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
        >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

ensure_venv() {
  local extras=${1:-}
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    if ! py=$(find_python); then
      ensure_apt python3 python3-venv
      py=$(find_python) || { note "no Python >= 3.11 with venv found"; return 1; }
    fi
    note "creating $VENV with $("$py" --version)"
    "$py" -m venv "$VENV"
  fi
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  local stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | md5sum | cut -c1-12)-${extras:-base}"
  if [ ! -e "$stamp" ]; then
    note "pip install -e $spec"
    # pip's own exit status decides: a failed install of the extras must not be stamped as done
    local log rc=0
    log=$(mktemp)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" >"$log" 2>&1 || rc=$?
    grep -v "^WARNING: Location" "$log" >&2 || true
    rm -f "$log"
    [ "$rc" -eq 0 ] || { note "pip install -e $spec failed (exit $rc)"; return 1; }
    "$VENV/bin/python" -c 'import ha_ingestor' || { note "installing the project failed"; return 1; }
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

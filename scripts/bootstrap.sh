#!/usr/bin/env bash
# Prepare a fresh machine for development: uv, the Python environment (.venv from
# uv.lock, dev group included), Java 17+ and Maven (for the local Kafka broker).
# Idempotent; fast when everything is already in place.
#
# Environment:
#   REGSOSEK_UV_VERSION   uv version to install when uv is not on PATH (default 0.13.8)
#   REGSOSEK_SKIP_JAVA=1  do not check/install Java and Maven
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

UV_VERSION="${REGSOSEK_UV_VERSION:-0.13.8}"
UV_VENV="$REGSOSEK_LOCAL/uv-venv"

find_uv() {
    if command -v uv >/dev/null 2>&1; then
        command -v uv
    elif [[ -x "$UV_VENV/bin/uv" ]]; then
        echo "$UV_VENV/bin/uv"
    fi
}

install_uv() {
    local py
    py="$(command -v python3 || true)"
    [[ -n "$py" ]] || die "python3 not found; install Python 3.11+ (Debian: apt-get install python3 python3-venv)"
    log "uv not on PATH; installing uv==$UV_VERSION into ${UV_VENV#"$REGSOSEK_ROOT"/}"
    mkdir -p "$REGSOSEK_LOCAL"
    rm -rf "$UV_VENV"
    if "$py" -m venv "$UV_VENV" >/dev/null 2>&1 && "$UV_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        "$UV_VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" \
            || die "pip could not install uv==$UV_VERSION"
    else
        rm -rf "$UV_VENV"
        warn "python3 -m venv is unavailable (Debian: python3-venv); falling back to 'pip install --user'"
        "$py" -m pip install -q --user "uv==$UV_VERSION" \
            || "$py" -m pip install -q --user --break-system-packages "uv==$UV_VERSION" \
            || die "could not install uv==$UV_VERSION with pip"
        local user_bin
        user_bin="$("$py" -m site --user-base)/bin"
        mkdir -p "$UV_VENV/bin"
        ln -sf "$user_bin/uv" "$UV_VENV/bin/uv"
    fi
}

UV="$(find_uv)"
if [[ -z "$UV" ]]; then
    install_uv
    UV="$(find_uv)"
fi
[[ -n "$UV" && -x "$UV" ]] || die "uv not available after install"

cd "$REGSOSEK_ROOT"
# --frozen: install exactly what uv.lock says, never re-resolve.
if ! "$UV" sync --frozen --quiet; then
    die "'uv sync --frozen' failed (uv: $UV)"
fi
log "Python environment ready: .venv ($("$REGSOSEK_ROOT/.venv/bin/python" -c 'import sys; print(sys.version.split()[0])'), uv $("$UV" --version | awk '{print $2}'))"

if [[ "${REGSOSEK_SKIP_JAVA:-0}" != "1" ]]; then
    ensure_java maven
    log "Java $(java_major "$(find_java)") and $(mvn -v 2>/dev/null | head -n1 | sed 's/\x1b\[[0-9;]*m//g' | awk '{print $1, $2, $3}') present"
fi

# kcat (Debian package `kcat`): the documented client for consuming eligibility-decided
# directly, and what the Kafka-native integration test runs. Installed only when
# missing and we are root; otherwise say how.
ensure_kcat() {
    command -v kcat >/dev/null 2>&1 && return 0
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        warn "kcat not found: install it (Debian: apt-get install kcat); the Kafka-native integration test needs it"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends kcat >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q --no-install-recommends kcat >/dev/null 2>&1 \
            || { warn "apt-get install -y kcat failed; the Kafka-native integration test will fail"; return 0; }
    fi
    log "kcat installed ($(kcat -V 2>/dev/null | head -n1))"
}
ensure_kcat

# promtool (Debian package `prometheus`): checks and unit-tests the alert rules in
# deploy/monitoring (tests/compose/test_monitoring.py). Installed only when missing and we are
# root; the package's server is not started (no systemd in a container; and nothing here uses it).
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        warn "promtool not found: install it (Debian: apt-get install prometheus); the alert-rule tests are skipped without it"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
            || { warn "apt-get install -y prometheus failed; the alert-rule tests will be skipped"; return 0; }
    fi
    log "promtool installed ($(promtool --version 2>&1 | head -n1))"
}
ensure_promtool

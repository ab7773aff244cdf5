# Shared functions for the scripts in scripts/. Source it; do not execute it.
# shellcheck shell=bash

# Repo root = parent of scripts/, resolved from this file's own location so the
# scripts work from any cwd and in a clone in any folder.
REGSOSEK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
# shellcheck disable=SC2034  # used by the scripts that source this file
REGSOSEK_SCRIPTS="$REGSOSEK_ROOT/scripts"
# shellcheck disable=SC2034
REGSOSEK_LOCAL="$REGSOSEK_ROOT/.local"

# Pinned versions (KAFKA_VERSION, LOG4J_VERSION). Environment wins, so a one-off
# override such as `KAFKA_VERSION=4.3.0 scripts/kafka.sh install` works.
_regsosek_load_versions() {
    local line key value
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key="${BASH_REMATCH[1]}"
        value="${BASH_REMATCH[2]}"
        value="${value%"${value##*[![:space:]]}"}"
        value="${value%\"}"; value="${value#\"}"
        if [[ -z "${!key:-}" ]]; then
            printf -v "$key" '%s' "$value"
            export "${key?}"
        fi
    done <"$REGSOSEK_SCRIPTS/versions.env"
}
_regsosek_load_versions

_regsosek_tag="${REGSOSEK_LOG_TAG:-$(basename "$0" .sh)}"
log() { printf '[%s] %s\n' "$_regsosek_tag" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$_regsosek_tag" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$_regsosek_tag" "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# apt-get install, only as root, non-interactive. Runs `apt-get update` once per process.
_regsosek_apt_updated=0
apt_install() {
    is_root || die "cannot install packages ($*) without root; install them yourself and re-run"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* yourself and re-run"
    export DEBIAN_FRONTEND=noninteractive
    if [[ "$_regsosek_apt_updated" -eq 0 ]]; then
        log "apt-get update"
        apt-get update -q >/dev/null
        _regsosek_apt_updated=1
    fi
    log "apt-get install -y $*"
    apt-get install -y -q --no-install-recommends "$@"
}

# True when something accepts TCP connections on HOST:PORT.
port_open() {
    local host="$1" port="$2"
    # shellcheck disable=SC2016  # $0/$1 expand in the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# True when PID is a live process (a zombie counts as dead).
pid_alive() {
    local pid="$1" state
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z* ]]
}

# Java major version of the given java binary (e.g. 17), or empty.
java_major() {
    local java="$1" major minor
    read -r major minor < <("$java" -version 2>&1 |
        sed -n 's/.*version "\([0-9][0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*".*/\1 \3/p' | head -n1) || true
    [[ -n "${major:-}" ]] || return 0
    if [[ "$major" == "1" ]]; then echo "${minor:-0}"; else echo "$major"; fi
}

# Path of a java >= 17 (JAVA_HOME first, then PATH), or empty.
find_java() {
    local cand m
    for cand in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null || true)"; do
        [[ -n "$cand" && -x "$cand" ]] || continue
        m="$(java_major "$cand")"
        if [[ -n "$m" && "$m" -ge 17 ]]; then echo "$cand"; return 0; fi
    done
    return 0
}

# Make sure Java 17+ (and Maven, if asked with `ensure_java maven`) are present,
# installing them with apt-get when running as root.
ensure_java() {
    local want_maven="${1:-}" pkgs=()
    [[ -n "$(find_java)" ]] || pkgs+=(openjdk-17-jre-headless)
    if [[ "$want_maven" == "maven" ]] && ! command -v mvn >/dev/null 2>&1; then
        pkgs+=(maven)
    fi
    if ((${#pkgs[@]})); then
        if is_root; then
            apt_install "${pkgs[@]}"
        else
            die "missing ${pkgs[*]} (need Java 17+ and Maven); install them, e.g. 'sudo apt-get install ${pkgs[*]}', and re-run"
        fi
    fi
    [[ -n "$(find_java)" ]] || die "Java 17+ not found after install (set JAVA_HOME or fix PATH)"
}

# Prints the comment block at the top of a script (after the shebang) as help text.
print_header_help() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1" >&2
}

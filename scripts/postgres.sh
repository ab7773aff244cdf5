#!/usr/bin/env bash
# Project-owned PostgreSQL cluster for local development and integration tests.
#
#   scripts/postgres.sh start                          initdb once, start, wait until ready
#   scripts/postgres.sh stop [--mode fast|immediate|smart]  (default fast)
#   scripts/postgres.sh status                         exit 0 when running, 3 when not
#   scripts/postgres.sh createdbs [EXTRA_DB ...]       role regsosek + intake, verify, classify, notify, console
#   scripts/postgres.sh psql [PSQL_ARGS ...]           psql as regsosek (default database: postgres)
#   scripts/postgres.sh url                            print REGSOSEK_PG_URL_BASE
#
# Environment:
#   REGSOSEK_PG_PORT          TCP port on 127.0.0.1 (default 15432)
#   REGSOSEK_PG_SHARED_BUFFERS  PostgreSQL's shared_buffers (default 256MB; BENCHMARKS.md, target 4)
#   REGSOSEK_PG_EXTERNAL_URL  e.g. postgresql://user:pw@host:5432/postgres: use that server
#                             instead of the project cluster (start/stop become no-ops)
#
# State: .local/pg/{data,sock,log/postgresql.log}. As root the server runs as the
# 'postgres' system user; if that user cannot reach .local/pg, the cluster lives in
# /tmp/regsosek-pg-<hash of the repo path> instead (printed when used).
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PG_HOST=127.0.0.1
PG_PORT="${REGSOSEK_PG_PORT:-15432}"
SHARED_BUFFERS="${REGSOSEK_PG_SHARED_BUFFERS:-256MB}"
PG_ROLE=regsosek
PG_SUPERUSER=postgres # bootstrap superuser created by initdb
DEFAULT_DBS=(intake verify classify notify console)
EXTERNAL_URL="${REGSOSEK_PG_EXTERNAL_URL:-}"
PATH_HASH="$(printf '%s' "$REGSOSEK_ROOT" | sha1sum | cut -c1-10)"
RUN_AS="" # 'postgres' when we are root

usage() {
    print_header_help "$0"
    exit 2
}

# ---------------------------------------------------------------- binaries

find_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
    fi
    # Newest /usr/lib/postgresql/<major>/bin with a server in it.
    d="$(for b in /usr/lib/postgresql/*/bin; do
        [[ -x "$b/initdb" && -x "$b/pg_ctl" ]] && echo "$b"; done | sort -t/ -k5,5n | tail -n1)"
    if [[ -n "$d" ]]; then echo "$d"; return 0; fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 0
}

ensure_binaries() {
    BINDIR="$(find_bindir)"
    if [[ -z "$BINDIR" ]]; then
        if is_root; then
            log "PostgreSQL server binaries not found; installing the Debian 'postgresql' package"
            apt_install postgresql
            BINDIR="$(find_bindir)"
        else
            die "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them (Debian: 'sudo apt-get install postgresql') or set REGSOSEK_PG_EXTERNAL_URL"
        fi
    fi
    [[ -n "$BINDIR" ]] || die "PostgreSQL server binaries still not found after install"
}

psql_bin() {
    if [[ -n "${BINDIR:-}" && -x "$BINDIR/psql" ]]; then
        echo "$BINDIR/psql"
    elif command -v psql >/dev/null 2>&1; then
        command -v psql
    else
        local d
        d="$(find_bindir)"
        [[ -n "$d" && -x "$d/psql" ]] || die "psql not found (install postgresql-client)"
        echo "$d/psql"
    fi
}

# ---------------------------------------------------------------- layout

# Runs "$@" as the cluster owner (postgres when we are root), from a directory
# that owner can read, so pg_ctl does not complain about the caller's cwd.
as_owner() {
    if [[ -n "$RUN_AS" ]]; then
        (cd / && runuser -u "$RUN_AS" -- "$@")
    else
        "$@"
    fi
}

choose_layout() {
    local local_base="$REGSOSEK_LOCAL/pg" tmp_base="/tmp/regsosek-pg-$PATH_HASH"
    PGBASE="$local_base"
    if is_root; then
        id -u postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' system user to run the server (install the Debian postgresql package)"
        RUN_AS=postgres
        if [[ -d "$tmp_base/data" && ! -d "$local_base/data" ]]; then
            PGBASE="$tmp_base"
        else
            mkdir -p "$local_base"
            chown postgres: "$local_base"
            if ! runuser -u postgres -- test -w "$local_base" -a -x "$local_base"; then
                PGBASE="$tmp_base"
                mkdir -p "$PGBASE"
                chown postgres: "$PGBASE"
                chmod 700 "$PGBASE"
                warn "user 'postgres' cannot reach $local_base (a parent directory is not traversable);"
                warn "the cluster lives in $PGBASE instead"
            fi
        fi
    else
        mkdir -p "$PGBASE"
    fi
    PGDATA_DIR="$PGBASE/data"
    PGLOG_DIR="$PGBASE/log"
    PGLOG="$PGLOG_DIR/postgresql.log"
    SOCK_DIR="$PGBASE/sock"
    # A Unix socket path is limited to 107 bytes: "<dir>/.s.PGSQL.<port>".
    if (( ${#SOCK_DIR} + ${#PG_PORT} + 12 > 100 )); then
        SOCK_DIR="/tmp/regsosek-pg-$PATH_HASH-sock"
    fi
    if [[ -n "$RUN_AS" ]]; then
        install -d -o postgres -g postgres -m 700 "$PGLOG_DIR" "$SOCK_DIR"
    else
        install -d -m 700 "$PGLOG_DIR" "$SOCK_DIR"
    fi
    if [[ -d "$PGDATA_DIR" ]]; then
        local owner want
        owner="$(stat -c %U "$PGDATA_DIR")"
        want="${RUN_AS:-$(id -un)}"
        [[ "$owner" == "$want" ]] || die "$PGDATA_DIR belongs to '$owner' but the server would run as '$want'; remove it or run as that user"
    fi
}

# ---------------------------------------------------------------- commands

write_conf() {
    # Re-written on every start so port/socket changes take effect.
    local conf="$PGDATA_DIR/regsosek.conf"
    as_owner tee "$conf" >/dev/null <<EOF
# Written by scripts/postgres.sh on every start; edit the script, not this file.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = 200
shared_buffers = $SHARED_BUFFERS
# Durability stays on: tests stop the server under traffic and check nothing is lost.
fsync = on
synchronous_commit = on
full_page_writes = on
# Per-statement counters (no values: constants are normalised away); the bench's stored phase reads them.
shared_preload_libraries = 'pg_stat_statements'
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

do_initdb() {
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] && return 0
    log "initdb in $PGDATA_DIR"
    if [[ -n "$RUN_AS" ]]; then
        install -d -o postgres -g postgres -m 700 "$PGDATA_DIR"
    else
        install -d -m 700 "$PGDATA_DIR"
    fi
    as_owner "$BINDIR/initdb" -D "$PGDATA_DIR" --auth=trust --username="$PG_SUPERUSER" \
        --encoding=UTF8 --locale=C --data-checksums >"$PGLOG_DIR/initdb.log" 2>&1 \
        || { cat "$PGLOG_DIR/initdb.log" >&2; die "initdb failed"; }
    echo "include 'regsosek.conf'" | as_owner tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

is_running() {
    [[ -f "$PGDATA_DIR/postmaster.pid" ]] || return 1
    as_owner "$BINDIR/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

cmd_start() {
    if [[ -n "$EXTERNAL_URL" ]]; then
        log "REGSOSEK_PG_EXTERNAL_URL is set: using that server, not starting a local cluster"
        return 0
    fi
    ensure_binaries
    choose_layout
    do_initdb
    if is_running; then
        log "PostgreSQL already running on $PG_HOST:$PG_PORT (data: $PGDATA_DIR)"
        return 0
    fi
    if port_open "$PG_HOST" "$PG_PORT"; then
        die "port $PG_PORT is already in use by another process; stop it or set REGSOSEK_PG_PORT"
    fi
    write_conf
    log "starting PostgreSQL $(cat "$PGDATA_DIR/PG_VERSION") on $PG_HOST:$PG_PORT (data: ${PGDATA_DIR#"$REGSOSEK_ROOT"/})"
    # -w: wait until it accepts connections (includes crash recovery after an immediate stop).
    if ! as_owner "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 120 start >/dev/null; then
        echo "----- last 30 lines of $PGLOG -----" >&2
        tail -n 30 "$PGLOG" >&2 || true
        die "PostgreSQL failed to start"
    fi
    log "PostgreSQL ready on $PG_HOST:$PG_PORT; log: $PGLOG"
}

cmd_stop() {
    local mode=fast
    while (($#)); do
        case "$1" in
            --mode) mode="${2:-}"; shift 2 || die "--mode needs a value" ;;
            --mode=*) mode="${1#--mode=}"; shift ;;
            *) die "unknown option for stop: $1" ;;
        esac
    done
    case "$mode" in fast | immediate | smart) ;; *) die "--mode must be fast, immediate or smart" ;; esac
    if [[ -n "$EXTERNAL_URL" ]]; then
        log "REGSOSEK_PG_EXTERNAL_URL is set: not stopping an external server"
        return 0
    fi
    ensure_binaries
    choose_layout
    if ! is_running; then
        log "PostgreSQL not running"
        return 0
    fi
    log "stopping PostgreSQL (mode $mode)"
    as_owner "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m "$mode" -w -t 60 stop >/dev/null
    log "PostgreSQL stopped"
}

cmd_status() {
    if [[ -n "$EXTERNAL_URL" ]]; then
        if "$(psql_bin)" "$EXTERNAL_URL" -XAtqc 'select 1' >/dev/null 2>&1; then
            echo "postgres: external server reachable ($(redact "$EXTERNAL_URL"))"
            return 0
        fi
        echo "postgres: external server NOT reachable ($(redact "$EXTERNAL_URL"))"
        return 3
    fi
    ensure_binaries
    choose_layout
    if is_running; then
        echo "postgres: running on $PG_HOST:$PG_PORT (data: $PGDATA_DIR)"
        return 0
    fi
    echo "postgres: stopped"
    return 3
}

redact() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

# URL without its database path (and query), to which callers append "/<db>".
url_base() {
    if [[ -n "$EXTERNAL_URL" ]]; then
        local u="${EXTERNAL_URL%%\?*}" scheme rest
        scheme="${u%%://*}"
        rest="${u#*://}"
        echo "$scheme://${rest%%/*}"
    else
        echo "postgresql://$PG_ROLE@$PG_HOST:$PG_PORT"
    fi
}

admin_psql() {
    # psql as a superuser against the maintenance database; SQL on stdin.
    local psql
    psql="$(psql_bin)"
    if [[ -n "$EXTERNAL_URL" ]]; then
        "$psql" "$EXTERNAL_URL" -X -v ON_ERROR_STOP=1 -q
    else
        "$psql" -X -h "$PG_HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -v ON_ERROR_STOP=1 -q
    fi
}

valid_db_name() { [[ "$1" =~ ^[a-z_][a-z0-9_]*$ ]]; }

cmd_createdbs() {
    local dbs=("${DEFAULT_DBS[@]}" "$@") db owner=""
    for db in "${dbs[@]}"; do
        valid_db_name "$db" || die "invalid database name '$db' (use lower-case letters, digits, _)"
    done
    if [[ -z "$EXTERNAL_URL" ]]; then
        ensure_binaries
        choose_layout
        is_running || die "PostgreSQL is not running; run 'scripts/postgres.sh start' first"
        admin_psql <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN SUPERUSER;
  END IF;
END
\$\$;
SQL
        owner=" OWNER $PG_ROLE"
    else
        owner="" # the connecting user owns them
    fi
    for db in "${dbs[@]}"; do
        admin_psql <<SQL
SELECT format('CREATE DATABASE %I%s', '$db', '$owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')
\gexec
SQL
    done
    log "databases ready on $(redact "$(url_base)"): ${dbs[*]}"
}

cmd_psql() {
    local psql
    psql="$(psql_bin)"
    if [[ -n "$EXTERNAL_URL" ]]; then
        exec "$psql" "$EXTERNAL_URL" "$@"
    fi
    PGHOST="$PG_HOST" PGPORT="$PG_PORT" PGUSER="$PG_ROLE" PGDATABASE="${PGDATABASE:-postgres}" \
        exec "$psql" "$@"
}

sub="${1:-}"
[[ $# -gt 0 ]] && shift
case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status ;;
    createdbs) cmd_createdbs "$@" ;;
    psql) cmd_psql "$@" ;;
    url) url_base ;;
    *) usage ;;
esac

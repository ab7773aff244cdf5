#!/usr/bin/env bash
# A local three-broker Apache Kafka cluster (KRaft: every node broker + controller), from the same
# jars as the single broker of scripts/kafka.sh, for the scale-out tests and `make bench` on a
# cluster. Replication as in production: factor 3, min.insync.replicas 2 (the `cluster` topic profile).
#
#   scripts/kafka-cluster.sh start [NODE]   format storage once, start all nodes (or one), wait until ready
#   scripts/kafka-cluster.sh stop [NODE]    SIGTERM, then SIGKILL after 30 s
#   scripts/kafka-cluster.sh kill NODE      SIGKILL one node (a broker lost without warning)
#   scripts/kafka-cluster.sh status         one line per node; exit 0 only when all run
#   scripts/kafka-cluster.sh bootstrap      print the bootstrap list (host:port,host:port,...)
#
# Environment:
#   REGSOSEK_KAFKA_PORT             node 1's client port (default 19092); node N listens on PORT + 100*(N-1)
#   REGSOSEK_KAFKA_CONTROLLER_PORT  node 1's controller port (default 19093); node N: + 100*(N-1)
#   REGSOSEK_KAFKA_BROKERS          number of nodes (default 3)
#   REGSOSEK_KAFKA_HEAP_OPTS        JVM heap per node (default "-Xms256m -Xmx768m")
#   REGSOSEK_KAFKA_START_TIMEOUT    seconds to wait for readiness (default 120)
#
# State: .local/kafka-cluster/{cluster.id,node-<N>/{data,logs,server.properties,kafka.pid}}
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

HOST=127.0.0.1
BASE_PORT="${REGSOSEK_KAFKA_PORT:-19092}"
BASE_CONTROLLER="${REGSOSEK_KAFKA_CONTROLLER_PORT:-19093}"
NODES="${REGSOSEK_KAFKA_BROKERS:-3}"
HEAP_OPTS="${REGSOSEK_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
START_TIMEOUT="${REGSOSEK_KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT=30
CDIR="$REGSOSEK_LOCAL/kafka-cluster"
TEMPLATE="$REGSOSEK_SCRIPTS/kafka/cluster.properties.template"
LOG4J_CONFIG="$REGSOSEK_SCRIPTS/kafka/log4j2.xml"

usage() {
    print_header_help "$0"
    exit 2
}

port_of() { echo $((BASE_PORT + 100 * ($1 - 1))); }
controller_of() { echo $((BASE_CONTROLLER + 100 * ($1 - 1))); }
node_dir() { echo "$CDIR/node-$1"; }
all_nodes() { seq 1 "$NODES"; }

voters() {
    local n out=()
    for n in $(all_nodes); do out+=("$n@$HOST:$(controller_of "$n")"); done
    (IFS=,; echo "${out[*]}")
}

cmd_bootstrap() {
    local n out=()
    for n in $(all_nodes); do out+=("$HOST:$(port_of "$n")"); done
    (IFS=,; echo "${out[*]}")
}

runtime() {
    local rt
    rt="$(bash "$REGSOSEK_SCRIPTS/kafka.sh" runtime)" || die "could not install the Kafka jars"
    JAVA="$(sed -n 1p <<<"$rt")"
    LIBS="$(sed -n 2p <<<"$rt")"
}

running_pid() {
    local f pid
    f="$(node_dir "$1")/kafka.pid"
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

render_and_format() {
    local n="$1" d cid
    d="$(node_dir "$n")"
    mkdir -p "$d/data" "$d/logs"
    sed -e "s|@NODE_ID@|$n|g" -e "s|@KAFKA_PORT@|$(port_of "$n")|g" \
        -e "s|@CONTROLLER_PORT@|$(controller_of "$n")|g" -e "s|@VOTERS@|$(voters)|g" \
        -e "s|@DATA_DIR@|$d/data|g" "$TEMPLATE" >"$d/server.properties"
    [[ -f "$d/data/meta.properties" ]] && return 0
    if [[ ! -s "$CDIR/cluster.id" ]]; then
        cid="$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 | tr -d '[:space:]')"
        [[ -n "$cid" ]] || die "StorageTool random-uuid produced no cluster id"
        echo "$cid" >"$CDIR/cluster.id"
    fi
    cid="$(tr -d '[:space:]' <"$CDIR/cluster.id")"
    "$JAVA" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$d/logs" -cp "$LIBS/*" \
        kafka.tools.StorageTool format -g -t "$cid" -c "$d/server.properties" >"$d/logs/format.out" 2>&1 \
        || { cat "$d/logs/format.out" >&2; die "storage format of node $n failed"; }
}

launch() {
    local n="$1" d
    d="$(node_dir "$n")"
    port_open "$HOST" "$(port_of "$n")" && die "port $(port_of "$n") (node $n) is in use by another process"
    render_and_format "$n"
    : >"$d/logs/started.marker"
    stat -c %s "$d/logs/server.log" 2>/dev/null >"$d/start.offset" || echo 0 >"$d/start.offset"
    # shellcheck disable=SC2086  # HEAP_OPTS is a list of JVM flags
    setsid nohup "$JAVA" $HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$d/logs" \
        -cp "$LIBS/*" kafka.Kafka "$d/server.properties" >"$d/logs/kafka.out" 2>&1 </dev/null &
    echo $! >"$d/kafka.pid"
    log "node $n starting (pid $!) on $HOST:$(port_of "$n")"
}

started() {
    local d offset size
    d="$(node_dir "$1")"
    [[ -f "$d/logs/server.log" ]] || return 1
    offset="$(cat "$d/start.offset" 2>/dev/null || echo 0)"
    size="$(stat -c %s "$d/logs/server.log")"
    ((size < offset)) && offset=0
    tail -c "+$((offset + 1))" "$d/logs/server.log" | grep -q 'Kafka Server started'
}

wait_ready() {
    local n deadline=$((SECONDS + START_TIMEOUT))
    for n in "$@"; do
        until port_open "$HOST" "$(port_of "$n")" && started "$n"; do
            running_pid "$n" >/dev/null || { tail -n 40 "$(node_dir "$n")/logs/server.log" >&2 || true; die "node $n exited during startup"; }
            ((SECONDS < deadline)) || { tail -n 40 "$(node_dir "$n")/logs/server.log" >&2 || true; die "node $n not ready after ${START_TIMEOUT}s"; }
            sleep 0.5
        done
        log "node $n ready on $HOST:$(port_of "$n")"
    done
}

cmd_start() {
    local nodes=("$@")
    ((${#nodes[@]})) || mapfile -t nodes < <(all_nodes)
    runtime
    mkdir -p "$CDIR"
    local n launched=()
    for n in "${nodes[@]}"; do
        if running_pid "$n" >/dev/null; then
            log "node $n already running on $HOST:$(port_of "$n")"
        else
            launch "$n"
            launched+=("$n")
        fi
    done
    # The first node is ready only once a majority of the controllers runs.
    ((${#launched[@]} == 0)) || wait_ready "${launched[@]}"
    log "cluster bootstrap: $(cmd_bootstrap)"
}

stop_node() {
    local n="$1" sig="$2" pid deadline
    pid="$(running_pid "$n")" || { log "node $n not running"; rm -f "$(node_dir "$n")/kafka.pid"; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            warn "node $n did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
    rm -f "$(node_dir "$n")/kafka.pid"
    log "node $n stopped ($sig)"
}

cmd_stop() {
    # All nodes are signalled at once: stopped one by one, the last ones would wait for a
    # controller quorum that is already gone before they finish a controlled shutdown.
    local nodes=("$@") n
    ((${#nodes[@]})) || mapfile -t nodes < <(all_nodes)
    for n in "${nodes[@]}"; do stop_node "$n" TERM & done
    wait
}

cmd_status() {
    local n pid rc=0
    for n in $(all_nodes); do
        if pid="$(running_pid "$n")"; then
            echo "kafka node $n: running (pid $pid) on $HOST:$(port_of "$n")"
        else
            echo "kafka node $n: stopped"
            rc=3
        fi
    done
    return "$rc"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    kill) [[ -n "${2:-}" ]] || usage; stop_node "$2" KILL ;;
    status) cmd_status ;;
    bootstrap) cmd_bootstrap ;;
    *) usage ;;
esac

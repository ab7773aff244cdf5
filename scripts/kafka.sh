#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller) without Docker.
#
#   scripts/kafka.sh install   fetch the broker jars from Maven Central (once per version)
#   scripts/kafka.sh start     format storage once, start in the background, wait until ready
#   scripts/kafka.sh stop      SIGTERM, then SIGKILL after 30 s
#   scripts/kafka.sh status    exit 0 when running, 3 when not
#   scripts/kafka.sh wait      wait until the broker accepts connections
#   scripts/kafka.sh runtime   install if needed; print the java binary and the jar folder, one a
#                              line (for a second, differently configured broker: tests/integration/securekafka.py)
#
# Environment:
#   REGSOSEK_KAFKA_PORT             PLAINTEXT listener port (default 19092)
#   REGSOSEK_KAFKA_CONTROLLER_PORT  CONTROLLER listener port (default 19093)
#   REGSOSEK_KAFKA_HEAP_OPTS        JVM heap (default "-Xms512m -Xmx1g")
#   REGSOSEK_KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   REGSOSEK_MAVEN_REPO             Maven local repository (default ~/.m2/repository, or
#                                   .local/m2/repository when $HOME is not writable)
#   KAFKA_VERSION, LOG4J_VERSION    override scripts/versions.env
#
# State: .local/kafka/{libs-<version>,data,logs,cluster.id,kafka.pid,server.properties}
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

KAFKA_HOST=127.0.0.1
KAFKA_PORT="${REGSOSEK_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${REGSOSEK_KAFKA_CONTROLLER_PORT:-19093}"
HEAP_OPTS="${REGSOSEK_KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
START_TIMEOUT="${REGSOSEK_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30

KDIR="$REGSOSEK_LOCAL/kafka"
LIBS="$KDIR/libs-$KAFKA_VERSION"
LIBS_MARKER="$LIBS/.complete"
DATA_DIR="$KDIR/data"
LOG_DIR="$KDIR/logs"
SERVER_LOG="$LOG_DIR/server.log"
CONSOLE_LOG="$LOG_DIR/kafka.out"
PID_FILE="$KDIR/kafka.pid"
START_OFFSET_FILE="$KDIR/start.offset" # size of server.log when the running broker was launched
CLUSTER_ID_FILE="$KDIR/cluster.id"
PROPS="$KDIR/server.properties"
TEMPLATE="$REGSOSEK_SCRIPTS/kafka/server.properties.template"
LOG4J_CONFIG="$REGSOSEK_SCRIPTS/kafka/log4j2.xml"
POM="$REGSOSEK_SCRIPTS/kafka/pom.xml"

usage() {
    print_header_help "$0"
    exit 2
}

# ---------------------------------------------------------------- install

cmd_install() {
    if [[ -f "$LIBS_MARKER" ]]; then
        log "Kafka $KAFKA_VERSION jars already present in ${LIBS#"$REGSOSEK_ROOT"/}"
        return 0
    fi
    ensure_java maven
    mkdir -p "$KDIR"
    local tmp="$LIBS.partial"
    rm -rf "$tmp"
    local mvn_args=(-B -q -f "$POM"
        "-Dkafka.version=$KAFKA_VERSION" "-Dlog4j.version=$LOG4J_VERSION"
        -Dstyle.color=never
        dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$tmp")
    # Maven takes its repository from Java's user.home (the passwd entry), which may be
    # unwritable (e.g. a service account with home /nonexistent): pick one explicitly.
    local repo="${REGSOSEK_MAVEN_REPO:-}"
    if [[ -z "$repo" ]]; then
        if [[ -n "${HOME:-}" ]] && mkdir -p "$HOME/.m2" 2>/dev/null && [[ -w "$HOME/.m2" ]]; then
            repo="$HOME/.m2/repository"
        else
            repo="$REGSOSEK_LOCAL/m2/repository"
        fi
    fi
    mvn_args=("-Dmaven.repo.local=$repo" "${mvn_args[@]}")
    log "fetching kafka_2.13:$KAFKA_VERSION + log4j $LOG4J_VERSION from Maven Central ..."
    if ! mvn "${mvn_args[@]}" >"$KDIR/mvn.log" 2>&1; then
        tail -n 40 "$KDIR/mvn.log" >&2 || true
        rm -rf "$tmp"
        die "Maven could not fetch Kafka $KAFKA_VERSION (full output: ${KDIR#"$REGSOSEK_ROOT"/}/mvn.log)"
    fi
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after Maven run"
    [[ -f "$tmp/log4j-slf4j-impl-$LOG4J_VERSION.jar" ]] || die "log4j-slf4j-impl-$LOG4J_VERSION.jar missing after Maven run"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    date -u +%FT%TZ >"$LIBS_MARKER"
    log "installed $(find "$LIBS" -name '*.jar' | wc -l) jars into ${LIBS#"$REGSOSEK_ROOT"/} ($(du -sh "$LIBS" | cut -f1))"
}

# ---------------------------------------------------------------- internals

running_pid() {
    # Prints the broker pid when our broker is running; returns 1 otherwise.
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    # Guard against pid reuse after a reboot: it must be a JVM running kafka.Kafka.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

render_config() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$DATA_DIR|g" \
        "$TEMPLATE" >"$PROPS.tmp"
    mv "$PROPS.tmp" "$PROPS"
}

java_cmd() {
    JAVA="$(find_java)"
    [[ -n "$JAVA" ]] || die "Java 17+ not found (run scripts/bootstrap.sh, or set JAVA_HOME)"
}

format_storage() {
    if [[ -f "$DATA_DIR/meta.properties" ]]; then
        return 0
    fi
    local cid
    if [[ -s "$CLUSTER_ID_FILE" ]]; then
        cid="$(tr -d '[:space:]' <"$CLUSTER_ID_FILE")"
    else
        cid="$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 | tr -d '[:space:]')"
        [[ -n "$cid" ]] || die "StorageTool random-uuid produced no cluster id"
        echo "$cid" >"$CLUSTER_ID_FILE"
    fi
    log "formatting storage in ${DATA_DIR#"$REGSOSEK_ROOT"/} (cluster id $cid)"
    "$JAVA" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBS/*" kafka.tools.StorageTool format -g -t "$cid" -c "$PROPS" >"$LOG_DIR/format.out" 2>&1 \
        || { cat "$LOG_DIR/format.out" >&2; die "storage format failed"; }
}

log_tail() {
    local n="${1:-40}"
    if [[ -f "$SERVER_LOG" ]]; then
        echo "----- last $n lines of ${SERVER_LOG#"$REGSOSEK_ROOT"/} -----" >&2
        tail -n "$n" "$SERVER_LOG" >&2
    fi
    if [[ -s "$CONSOLE_LOG" ]]; then
        echo "----- ${CONSOLE_LOG#"$REGSOSEK_ROOT"/} (JVM stdout/stderr) -----" >&2
        tail -n 20 "$CONSOLE_LOG" >&2
    fi
}

# "Kafka Server started" in the part of server.log written since byte offset $1.
started_since() {
    local offset="$1" size
    [[ -f "$SERVER_LOG" ]] || return 1
    size="$(stat -c %s "$SERVER_LOG")"
    # Rotated since we started: the new file is entirely ours.
    ((size < offset)) && offset=0
    tail -c "+$((offset + 1))" "$SERVER_LOG" | grep -q 'Kafka Server started'
}

# ---------------------------------------------------------------- start/stop

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        log "Kafka already running (pid $pid) on $KAFKA_HOST:$KAFKA_PORT"
        cmd_wait  # it may still be starting (another shell launched it a moment ago)
        return 0
    fi
    rm -f "$PID_FILE"
    [[ -f "$LIBS_MARKER" ]] || cmd_install
    java_cmd
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        die "port $KAFKA_PORT is already in use by another process (not the broker in ${KDIR#"$REGSOSEK_ROOT"/}); stop it or set REGSOSEK_KAFKA_PORT"
    fi
    if port_open "$KAFKA_HOST" "$CONTROLLER_PORT"; then
        die "controller port $CONTROLLER_PORT is already in use; stop that process or set REGSOSEK_KAFKA_CONTROLLER_PORT"
    fi
    render_config
    format_storage

    local offset=0
    [[ -f "$SERVER_LOG" ]] && offset="$(stat -c %s "$SERVER_LOG")"
    echo "$offset" >"$START_OFFSET_FILE"
    log "starting Kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (controller $CONTROLLER_PORT)"
    # setsid: own session, so the broker outlives the calling shell/terminal.
    # shellcheck disable=SC2086  # HEAP_OPTS is a list of JVM flags
    setsid nohup "$JAVA" $HEAP_OPTS \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" \
        >"$CONSOLE_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid" "$offset"
    log "Kafka ready (pid $pid) on $KAFKA_HOST:$KAFKA_PORT; log: ${SERVER_LOG#"$REGSOSEK_ROOT"/}"
}

# wait_ready PID OFFSET: port open AND "Kafka Server started" logged after OFFSET.
wait_ready() {
    local pid="$1" offset="$2" deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if ! pid_alive "$pid"; then
            log_tail 60
            rm -f "$PID_FILE"
            die "Kafka exited during startup (see the log above)"
        fi
        if port_open "$KAFKA_HOST" "$KAFKA_PORT" && started_since "$offset"; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            log_tail 60
            local open
            open="$(port_open "$KAFKA_HOST" "$KAFKA_PORT" && echo yes || echo no)"
            cmd_stop
            die "Kafka (pid $pid) not ready after ${START_TIMEOUT}s (port $KAFKA_PORT open: $open); stopped it again. Raise REGSOSEK_KAFKA_START_TIMEOUT or read the log above"
        fi
        sleep 0.5
    done
}

cmd_wait() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until port_open "$KAFKA_HOST" "$KAFKA_PORT"; do
        if ((SECONDS >= deadline)); then
            log_tail 40
            die "nothing accepts connections on $KAFKA_HOST:$KAFKA_PORT after ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    # When the broker is ours, also require the started message logged by this run.
    if running_pid >/dev/null; then
        local offset
        offset="$(cat "$START_OFFSET_FILE" 2>/dev/null || echo 0)"
        until started_since "$offset"; do
            ((SECONDS < deadline)) || { log_tail 40; die "Kafka did not log 'Kafka Server started' within ${START_TIMEOUT}s"; }
            sleep 0.5
        done
    fi
    log "Kafka accepting connections on $KAFKA_HOST:$KAFKA_PORT"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "Kafka not running"
        return 0
    fi
    log "stopping Kafka (pid $pid) ..."
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            warn "Kafka did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.5
    done
    rm -f "$PID_FILE"
    log "Kafka stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
            echo "kafka: running (pid $pid), $KAFKA_HOST:$KAFKA_PORT accepting connections, version $KAFKA_VERSION"
        else
            echo "kafka: running (pid $pid), but $KAFKA_HOST:$KAFKA_PORT not accepting connections yet"
        fi
        return 0
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        echo "kafka: not started by this project, but something listens on $KAFKA_HOST:$KAFKA_PORT"
    else
        echo "kafka: stopped"
    fi
    return 3
}

cmd_runtime() {
    [[ -f "$LIBS_MARKER" ]] || cmd_install
    ensure_java
    java_cmd
    printf '%s\n%s\n' "$JAVA" "$LIBS"
}

case "${1:-}" in
    install) cmd_install ;;
    runtime) cmd_runtime ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    wait) cmd_wait ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac

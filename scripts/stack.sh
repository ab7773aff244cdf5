#!/usr/bin/env bash
# The whole local stack: Python env, Kafka, PostgreSQL, topics.
#
#   scripts/stack.sh up       bootstrap, start Kafka + PostgreSQL, create databases and topics
#   scripts/stack.sh down     stop Kafka and PostgreSQL (data is kept in .local/)
#   scripts/stack.sh status   state of both; exit 0 only when both are up
#   scripts/stack.sh env      print the export lines (also written to .local/stack.env)
#
# Use the environment in a shell:  eval "$(scripts/stack.sh env)"
#
# Environment: REGSOSEK_KAFKA_PORT (19092), REGSOSEK_KAFKA_CONTROLLER_PORT (19093),
# REGSOSEK_PG_PORT (15432), REGSOSEK_PG_EXTERNAL_URL (use an existing PostgreSQL),
# REGSOSEK_KAFKA_BROKERS (1: the single broker of scripts/kafka.sh, the default for `make run`
# and `make test`; 3: the three-broker cluster of scripts/kafka-cluster.sh, topics created with
# the `cluster` profile: replication factor 3, min.insync.replicas 2).
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

KAFKA_PORT="${REGSOSEK_KAFKA_PORT:-19092}"
BROKERS="${REGSOSEK_KAFKA_BROKERS:-1}"
PG_PORT="${REGSOSEK_PG_PORT:-15432}"
STACK_ENV="$REGSOSEK_LOCAL/stack.env"
S="$REGSOSEK_SCRIPTS"

usage() {
    print_header_help "$0"
    exit 2
}

clustered() { ((BROKERS > 1)); }

bootstrap() {
    if clustered; then bash "$S/kafka-cluster.sh" bootstrap; else echo "127.0.0.1:$KAFKA_PORT"; fi
}

env_lines() {
    local pg_base
    pg_base="$(bash "$S/postgres.sh" url)"
    printf 'export REGSOSEK_KAFKA_BOOTSTRAP=%q\n' "$(bootstrap)"
    printf 'export REGSOSEK_KAFKA_BROKERS=%q\n' "$BROKERS"
    printf 'export REGSOSEK_TOPIC_PROFILE=%q\n' "$(clustered && echo cluster || echo local)"
    printf 'export REGSOSEK_PG_URL_BASE=%q\n' "$pg_base"
    printf 'export REGSOSEK_KAFKA_PORT=%q\n' "$KAFKA_PORT"
    printf 'export REGSOSEK_KAFKA_CONTROLLER_PORT=%q\n' "${REGSOSEK_KAFKA_CONTROLLER_PORT:-19093}"
    [[ -n "${REGSOSEK_PG_EXTERNAL_URL:-}" ]] || printf 'export REGSOSEK_PG_PORT=%q\n' "$PG_PORT"
}

write_env() {
    mkdir -p "$REGSOSEK_LOCAL"
    {
        echo "# Written by scripts/stack.sh; source it: . .local/stack.env"
        env_lines
    } >"$STACK_ENV.tmp"
    mv "$STACK_ENV.tmp" "$STACK_ENV"
}

cmd_up() {
    bash "$S/bootstrap.sh"
    bash "$S/kafka.sh" install
    local profile=local
    if clustered; then
        bash "$S/kafka-cluster.sh" start
        profile=cluster
    else
        bash "$S/kafka.sh" start
    fi
    bash "$S/postgres.sh" start
    bash "$S/postgres.sh" createdbs
    log "creating topics (profile $profile)"
    (cd "$REGSOSEK_ROOT" && .venv/bin/python -m regsosek.topics create \
        --bootstrap "$(bootstrap)" --profile "$profile") \
        || die "topic creation failed"
    write_env
    log "stack is up; environment in .local/stack.env:"
    env_lines >&2
}

cmd_down() {
    local rc=0
    bash "$S/kafka.sh" stop || rc=1
    bash "$S/kafka-cluster.sh" stop >/dev/null 2>&1 || rc=1
    bash "$S/postgres.sh" stop || rc=1
    return "$rc"
}

cmd_status() {
    local rc=0
    if clustered; then
        bash "$S/kafka-cluster.sh" status || rc=3
    else
        bash "$S/kafka.sh" status || rc=3
    fi
    bash "$S/postgres.sh" status || rc=3
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) write_env; env_lines ;;
    *) usage ;;
esac

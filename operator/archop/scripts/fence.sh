#!/usr/bin/env bash
# archop self-fencing agent (runs next to Postgres in every database pod).
# A PRIMARY that can reach neither the Kubernetes API server nor any streaming follower for
# ARCHOP_FENCE_AFTER_SECONDS stops taking writes: default_transaction_read_only on (persisted with ALTER
# SYSTEM, so it survives a restart) and every client session terminated. Both conditions are needed: an API
# blip alone never fences a healthy leader. Only the operator lifts the fence (ALTER SYSTEM RESET).
set -uo pipefail
for d in /usr/lib/postgresql/*/bin; do
  if [[ -d $d ]]; then PATH="$d:$PATH"; fi
done
export PATH

PGPORT=${PGPORT:-5432}
RUN_DIR=${ARCHOP_RUN_DIR:-/var/run/postgresql}
SUPERUSER=${POSTGRES_USER:-postgres}
AFTER=${ARCHOP_FENCE_AFTER_SECONDS:-3}
REPLY_MAX=${ARCHOP_FOLLOWER_REPLY_MAX_SECONDS:-3}   # a follower is alive if it replied this recently
INTERVAL=${ARCHOP_FENCE_INTERVAL_SECONDS:-1}
API_HOST=${ARCHOP_API_HOST:-${KUBERNETES_SERVICE_HOST:-}}
API_PORT=${ARCHOP_API_PORT:-${KUBERNETES_SERVICE_PORT:-443}}

log() { echo "archop-fence: $(date -u +%FT%TZ) $*" >&2; }

# Bounded: a frozen postmaster must not hang the agent.
export PGCONNECT_TIMEOUT=2
sql() { timeout 3 psql -h "$RUN_DIR" -p "$PGPORT" -U "$SUPERUSER" -d postgres -XAtqc "$1" 2>/dev/null; }

# TCP connect through bash's /dev/tcp: the postgres image has no curl.
api_reachable() {
  [[ -n $API_HOST ]] && timeout 1 bash -c "exec 3<>/dev/tcp/$API_HOST/$API_PORT" 2>/dev/null
}

# "primary|read_only|live_followers", or nothing when Postgres does not answer.
state() {
  sql "select pg_is_in_recovery()::text || '|' || current_setting('default_transaction_read_only') || '|' ||
       (select count(*) from pg_stat_replication
         where state = 'streaming' and reply_time > now() - interval '$REPLY_MAX seconds')"
}

fence() {
  # One connection, three separate statements (ALTER SYSTEM refuses to run inside a transaction block).
  timeout 5 psql -h "$RUN_DIR" -p "$PGPORT" -U "$SUPERUSER" -d postgres -XAtq \
    -c "alter system set default_transaction_read_only = on" -c "select pg_reload_conf()" \
    -c "select count(pg_terminate_backend(pid)) from pg_stat_activity
        where backend_type = 'client backend' and pid <> pg_backend_pid()" >/dev/null 2>&1
  log "SelfFenced: no API server and no streaming follower for ${AFTER}s; now read-only"
}

# One check; LOST_SINCE carries the time both conditions first failed (epoch ms).
LOST_SINCE=""
check_once() {
  local s now
  s=$(state) || { LOST_SINCE=""; return 0; }
  if [[ $s != "false|off|0" ]] || api_reachable; then
    LOST_SINCE=""; return 0
  fi
  now=$(date +%s%3N)
  LOST_SINCE=${LOST_SINCE:-$now}
  if ((now - LOST_SINCE >= AFTER * 1000)); then
    fence; LOST_SINCE=""
  fi
}

main() {
  log "watching (fence after ${AFTER}s without API server $API_HOST:$API_PORT and without followers)"
  while true; do
    check_once
    sleep "$INTERVAL"
  done
}

if [[ ${ARCHOP_SOURCE_ONLY:-0} != 1 ]]; then
  main "$@"
fi

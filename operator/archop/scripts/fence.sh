#!/usr/bin/env bash
# archop leader-lease agent (runs next to Postgres in every database pod; the design is in
# archop/failover/lease.py and docs/failover.md, "Leader lease").
#
# A primary may acknowledge writes only while it holds its lease, that is while
#   - the operator vouches for it: the operator's lease session (application_name archop-lease, a superuser
#     over TCP) ran a statement less than ARCHOP_LEASE_SECONDS ago, measured on this server's own clock; or
#   - failsafe: every follower named in archop.followers (set by the operator) streams from it and replied
#     within ARCHOP_FAILSAFE_REPLY_SECONDS. A failover detaches its candidate first, which ends this; or
#   - the postmaster started less than ARCHOP_LEASE_SECONDS ago: a leader restarted after a crash gets the
#     operator's first renewal (a promoted follower is renewed before its promotion).
# When none holds, the agent stops the postmaster at once (scripts/stop.sql, the shutdown the operator's
# fence uses, without the fence marker: start.sh may start it as a primary again, but only when no other
# primary answers on N-db-rw, and it then needs the lease again). The operator promotes a follower only
# after the lease has surely run out, so the old leader acknowledges nothing once the new one takes writes.
set -uo pipefail
for d in /usr/lib/postgresql/*/bin; do
  if [[ -d $d ]]; then PATH="$d:$PATH"; fi
done
export PATH

PGPORT=${PGPORT:-5432}
RUN_DIR=${ARCHOP_RUN_DIR:-/var/run/postgresql}
CONF_DIR=${ARCHOP_CONF_DIR:-/etc/archop}
SUPERUSER=${POSTGRES_USER:-postgres}
TTL=${ARCHOP_LEASE_SECONDS:-4}
REPLY=${ARCHOP_FAILSAFE_REPLY_SECONDS:-3}
INTERVAL=${ARCHOP_LEASE_CHECK_SECONDS:-0.5}

log() { echo "archop-lease: $(date -u +%FT%T.%3NZ) $*" >&2; }

# Bounded: a frozen postmaster must not hang the agent.
export PGCONNECT_TIMEOUT=2
sql() { timeout 3 psql -h "$RUN_DIR" -p "$PGPORT" -U "$SUPERUSER" -d postgres -XAtq "$@" 2>/dev/null; }

# standby | starting | renewed | failsafe | expired; nothing when Postgres does not answer.
lease_state() {
  sql -c "select case
    when pg_is_in_recovery() then 'standby'
    when clock_timestamp() - pg_postmaster_start_time() < interval '$TTL seconds' then 'starting'
    when exists (select 1 from pg_stat_activity a join pg_roles r on r.oid = a.usesysid
                  where a.application_name = 'archop-lease' and r.rolsuper and a.client_addr is not null
                    and clock_timestamp() - a.state_change < interval '$TTL seconds') then 'renewed'
    when not exists (
      select 1 from unnest(string_to_array(nullif(current_setting('archop.followers', true), ''), ',')) m
       where not exists (select 1 from pg_stat_replication s
                          where s.application_name = m and s.state = 'streaming'
                            and s.reply_time > clock_timestamp() - interval '$REPLY seconds')) then 'failsafe'
    else 'expired' end"
}

stop_now() {
  sql -c "set archop.stop_signal = 'QUIT'" -c "set archop.stop_marker = off" -f "$CONF_DIR/stop.sql" >/dev/null
  log "SelfFenced: no renewal by the operator for ${TTL}s and not every follower streams; postmaster stopped"
}

check_once() {
  local s
  s=$(lease_state) || return 0
  if [[ $s == expired ]]; then stop_now; fi
}

main() {
  log "watching the leader lease (operator renewal within ${TTL}s, or every follower streaming)"
  while true; do
    check_once
    sleep "$INTERVAL"
  done
}

if [[ ${ARCHOP_SOURCE_ONLY:-0} != 1 ]]; then
  main "$@"
fi

#!/usr/bin/env bash
# archop leader-lease agent (runs next to Postgres in every database pod; the design is in
# archop/failover/lease.py and docs/failover.md, "Leader lease").
#
# A primary may acknowledge writes only while it holds its lease, that is while
#   - the operator vouches for it: the operator's lease session (application_name archop-lease, a superuser
#     over TCP) ran a statement less than ARCHOP_LEASE_SECONDS ago, measured on this server's own clock; or
#   - failsafe: every follower named in archop.followers (set by the operator) streams from it and a new
#     reply from it arrived within ARCHOP_FAILSAFE_REPLY_SECONDS, on this server's clock: pg_stat_replication's
#     reply_time is the follower's clock, so the agent times when that value last changed instead. A failover
#     detaches a follower first, which ends this.
# When neither holds, the agent stops the postmaster at once (scripts/stop.sql, the shutdown the operator's
# fence uses, without the fence marker). The operator promotes a follower only after the lease has surely
# run out, so the old leader acknowledges nothing once the new one takes writes.
#
# A primary that start.sh started on its own (a crash restart) is gated: its clients are refused until the
# lease holds (start.sh, write_hba). The agent never stops a gated primary, it opens the gate when the
# lease holds; a gated primary the operator does not want is stopped by the operator (a rogue primary).
set -uo pipefail
for d in /usr/lib/postgresql/*/bin; do
  if [[ -d $d ]]; then PATH="$d:$PATH"; fi
done
export PATH

PGPORT=${PGPORT:-5432}
RUN_DIR=${ARCHOP_RUN_DIR:-/var/run/postgresql}
CONF_DIR=${ARCHOP_CONF_DIR:-/etc/archop}
HBA_FILE=${ARCHOP_HBA_FILE:-$CONF_DIR/pg_hba.conf}
ACTIVE_HBA=${ARCHOP_ACTIVE_HBA:-$RUN_DIR/pg_hba.active.conf}
GATE=${ARCHOP_GATE_FILE:-$RUN_DIR/archop-gated}
SUPERUSER=${POSTGRES_USER:-postgres}
PGDATA=${PGDATA:?names the postmaster of this instance}
TTL=${ARCHOP_LEASE_SECONDS:-3}
REPLY=${ARCHOP_FAILSAFE_REPLY_SECONDS:-3}
INTERVAL=${ARCHOP_LEASE_CHECK_SECONDS:-0.5}

log() { echo "archop-lease: $(date -u +%FT%T.%3NZ) $*" >&2; }

# Bounded: a frozen postmaster must not hang the agent; a loaded machine still answers within this.
export PGCONNECT_TIMEOUT=2
sql() { timeout 2 psql -h "$RUN_DIR" -p "$PGPORT" -U "$SUPERUSER" -d postgres -XAtq "$@" 2>/dev/null; }

# One line "standby" or "renewed", or "primary" followed by a line "member|reply" for each follower named in
# archop.followers (reply: the last reply_time of its streaming WAL sender, empty when it does not stream);
# nothing when Postgres does not answer.
lease_query() {
  sql -c "select line from (
    select 0, case
      when pg_is_in_recovery() then 'standby'
      when exists (select 1 from pg_stat_activity a join pg_roles r on r.oid = a.usesysid
                    where a.application_name = 'archop-lease' and r.rolsuper and a.client_addr is not null
                      and clock_timestamp() - a.state_change < interval '$TTL seconds') then 'renewed'
      else 'primary' end
    union all
    select 1, m || '|' || coalesce((select max(s.reply_time)::text from pg_stat_replication s
                                     where s.application_name = m and s.state = 'streaming'), '')
      from unnest(string_to_array(nullif(current_setting('archop.followers', true), ''), ',')) m
     where not pg_is_in_recovery()) checks (n, line) order by n"
}

declare -A REPLY_SEEN=()  # follower -> the reply_time last seen
declare -A REPLY_AT=()    # follower -> /proc/uptime before which that reply had not arrived
SAMPLED_AT=""             # /proc/uptime taken before the last query that answered

# failsafe_holds SINCE LINE...: whether every member sent a new reply within REPLY seconds, timed on this
# clock. SINCE is when the previous answered query started: a reply_time that differs from the one that query
# saw arrived after SINCE, so SINCE is a lower bound of its arrival, and the failsafe ends no later than
# REPLY after the reply really arrived. A value seen for the first time (the agent just started, or the
# follower just came back) does not count until it changes, since it may be old.
failsafe_holds() {
  local since=$1 line m r ok=0
  shift
  for line in "$@"; do
    m=${line%%|*} r=${line#*|}
    if [[ -z $r ]]; then ok=1; unset "REPLY_SEEN[$m]" "REPLY_AT[$m]"; continue; fi
    if [[ ${REPLY_SEEN[$m]+set} != set ]]; then
      REPLY_SEEN[$m]=$r REPLY_AT[$m]=""
    elif [[ ${REPLY_SEEN[$m]} != "$r" ]]; then
      REPLY_SEEN[$m]=$r REPLY_AT[$m]=$since
    fi
    if [[ -z ${REPLY_AT[$m]} ]] || older_than "${REPLY_AT[$m]}" "$REPLY"; then ok=1; fi
  done
  return $ok
}

# Sets LEASE to standby | renewed | failsafe | expired; non-zero when Postgres does not answer. Not run in a
# subshell: failsafe_holds keeps its times across checks.
LEASE=""
lease_state() {
  local out lines started since
  LEASE=""
  started=$(uptime_s)
  out=$(lease_query) || return 1
  [[ -n $out ]] || return 1
  since=${SAMPLED_AT:-$started} SAMPLED_AT=$started
  mapfile -t lines <<<"$out"
  case ${lines[0]} in
    standby) LEASE=standby ;;
    # Replies are timed while renewed too, so that the failsafe holds the moment the renewals stop.
    renewed) failsafe_holds "$since" "${lines[@]:1}"; LEASE=renewed ;;
    primary) if failsafe_holds "$since" "${lines[@]:1}"; then LEASE=failsafe; else LEASE=expired; fi ;;
    *) return 1 ;;
  esac
}

stop_now() {
  sql -c "set archop.stop_signal = 'QUIT'" -c "set archop.stop_marker = off" -f "$CONF_DIR/stop.sql" >/dev/null
  log "SelfFenced: no renewal by the operator for ${TTL}s and not every follower streams; postmaster stopped"
}

# The gate's open form is the configured rules themselves (start.sh, write_hba open).
open_gate() {
  cp "$HBA_FILE" "$ACTIVE_HBA.tmp" && mv "$ACTIVE_HBA.tmp" "$ACTIVE_HBA" && sql -c "select pg_reload_conf()" >/dev/null &&
    rm -f "$GATE" && log "GateOpened: the lease holds ($1); clients may connect"
}

uptime_s() { local u _; read -r u _ </proc/uptime; echo "$u"; }
older_than() { awk -v now="$(uptime_s)" -v at="$1" -v s="$2" 'BEGIN { exit !(now - at > s) }'; }

# The pod shares one process namespace: the agent sees this instance's postmaster (the postgres started
# with -D $PGDATA) and its children. SIGKILL reaches stopped (SIGSTOPped) processes too, and every child is
# killed, not only the postmaster, so that no backend finishes a commit when thawed.
kill_postgres() {
  local p pm="" comm stat fields args victims=()
  # Builtins only: one pass over /proc must stay fast wherever it runs (a host shows thousands of processes).
  for p in /proc/[0-9]*; do
    { read -r comm <"$p/comm"; } 2>/dev/null || continue  # a process may exit meanwhile
    [[ $comm == postgres ]] || continue
    { mapfile -d '' args <"$p/cmdline"; } 2>/dev/null || continue
    if [[ " ${args[*]} " == *" -D $PGDATA "* ]]; then pm=${p#/proc/}; fi
  done
  [[ -n $pm ]] || return 0
  victims=("$pm")
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    read -ra fields <<<"${stat##*) }"  # after the command name: state, ppid, ...
    if [[ ${fields[1]:-} == "$pm" ]]; then victims+=("${p#/proc/}"); fi
  done
  # One call: the postmaster and every child at once, before any child can be re-parented or resumed.
  kill -KILL "${victims[@]}" 2>/dev/null
}

HELD_AT=""  # /proc/uptime when this instance last held the lease as an open primary; "" otherwise

held() {
  if [[ -z $HELD_AT ]]; then log "LeaseHeld: $1"; fi
  HELD_AT=$(uptime_s)
}

check_once() {
  local s
  if ! lease_state; then
    # No answer. A primary that held the lease and has not answered for TTL cannot have been renewed
    # since (a renewal is a statement it completes), so its lease is over: a frozen or hung postmaster is
    # killed rather than left to acknowledge a commit when it resumes. Never a standby, a gated primary or
    # one still starting (crash recovery answers nothing for a while).
    if [[ -n $HELD_AT ]] && older_than "$HELD_AT" "$TTL"; then
      kill_postgres
      HELD_AT=""
      log "SelfFenced: the primary has not answered for ${TTL}s since it last held the lease; killed"
    fi
    return 0
  fi
  s=$LEASE
  if [[ -f $GATE ]]; then
    if [[ $s == renewed || $s == failsafe ]]; then open_gate "$s" && held "$s"; fi
  elif [[ $s == renewed || $s == failsafe ]]; then
    held "$s"
  elif [[ $s == expired ]]; then
    stop_now
    HELD_AT=""
  else
    HELD_AT=""
  fi
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

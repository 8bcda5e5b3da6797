#!/usr/bin/env bash
# archop: how one database pod's Postgres starts. It needs no Kubernetes API access: the operator decides who
# leads (pod label archop.io/role, status.currentLeader); this script only asks "does another primary answer
# on the read-write Service?" and prepares PGDATA accordingly (see docs/failover.md, "Start script").
#
#   empty PGDATA      -> bootstrap leader and nobody else alive: initdb + users; otherwise pg_basebackup
#   standby.signal    -> follower (pg_rewind first if the primary moved to a newer timeline)
#   was a primary     -> another primary answers: old leader, pg_rewind (fallback: fresh base backup);
#                        otherwise start as primary again (crash restart of the leader)
#   fence marker      -> the operator stopped this primary (hard fence): never a primary again on its own;
#                        wait for the new leader and rejoin it
#
# Source it with ARCHOP_SOURCE_ONLY=1 to get the functions without running main (used by the tests).
set -euo pipefail
shopt -s inherit_errexit

# Debian-built images keep the server binaries outside PATH; the official image has them on PATH.
for d in /usr/lib/postgresql/*/bin; do
  if [[ -d $d ]]; then PATH="$d:$PATH"; fi
done
export PATH

PGPORT=${PGPORT:-5432}
RUN_DIR=${ARCHOP_RUN_DIR:-/var/run/postgresql}
CONF_DIR=${ARCHOP_CONF_DIR:-/etc/archop}
HBA_FILE=${ARCHOP_HBA_FILE:-$CONF_DIR/pg_hba.conf}
# The rules Postgres reads: HBA_FILE itself, or its gated form (see write_hba). fence.sh opens the gate.
ACTIVE_HBA=${ARCHOP_ACTIVE_HBA:-$RUN_DIR/pg_hba.active.conf}
GATE=${ARCHOP_GATE_FILE:-$RUN_DIR/archop-gated}
PRIMARY_PORT=${ARCHOP_PRIMARY_PORT:-5432}
BOOTSTRAP_LEADER=${ARCHOP_BOOTSTRAP_LEADER:-}
PEERS=${ARCHOP_PEERS:-}                      # "host[:port] ..." of every database pod
# The servers this pod's passwords may be sent to (the passfile has a line for each, nothing for others): the
# read-write Service and every database pod name the operator may write into primary_conninfo.
PASSFILE_HOSTS=${ARCHOP_PASSFILE_HOSTS:-}
# The server certificate, its key and the CA (the N-db-tls Secret). Every connection to another instance
# verifies the server against that CA and the name it dialled (verify-full); only the loopback integration
# tests that run without certificates set ARCHOP_SSLMODE=disable.
TLS_DIR=${ARCHOP_TLS_DIR:-/etc/archop-tls}
CLIENT_TLS="sslmode=${ARCHOP_SSLMODE:-verify-full} sslrootcert=$TLS_DIR/ca.crt"
# The passwords are files of a read-only Secret volume (build/database.py, PASSWORD_FILES), never environment
# variables: the environment is inherited by every child and readable from /proc; argv is visible to all.
SECRETS_DIR=${ARCHOP_SECRETS_DIR:-/etc/archop-secrets}
SUPERUSER=${POSTGRES_USER:-postgres}
REPL_USER=${REPLICATION_USER:-replicator}
APP_USER=${APP_USER:-app}
APP_DB=${APP_DB:-app}
LISTEN=${ARCHOP_LISTEN:-*}
EXTRA_OPTS=${ARCHOP_EXTRA_OPTS:-}
WAIT_PRIMARY=${ARCHOP_WAIT_PRIMARY_SECONDS:-0}   # 0: wait for a primary forever
MARKER=archop-rejoin                            # read by the operator with pg_read_file
FENCED=archop-fenced                            # written by the operator's hard fence (failover/act.py)
REBUILD=archop-rebuild                          # written by the operator's rebuild (failover/act.py)
# The operator's physical slot for this instance on the leader (names.db_slot): archop_<pod, - as _>.
SLOT=${POD_NAME:-}; SLOT="archop_${SLOT//-/_}"
CONN_TIMEOUTS="connect_timeout=2 tcp_user_timeout=4000"  # in primary_conninfo (act.py writes the same)
LOCK_WAIT=${ARCHOP_LOCK_WAIT_SECONDS:-120}
# A crashed leader looks this long for a follower the operator promoted meanwhile (see prepare_pgdata).
RESTART_GRACE=${ARCHOP_RESTART_GRACE_SECONDS:-4}

log() { echo "archop-start: $*" >&2; }

passfile() { echo "${ARCHOP_PASSFILE:-$(dirname "$PGDATA")/archop.pgpass}"; }

# secret_file superuser|replication|app: the mounted file holding that user's password.
secret_file() { echo "$SECRETS_DIR/$1-password"; }

# secret superuser|replication|app: that password (as $(...) takes it: trailing newlines dropped); nothing
# when there is no such file (local tests). A file this user cannot read fails loudly (set -e), not as an
# empty password. cat's argv holds the path only; the value is never exported.
secret() {
  local f
  f=$(secret_file "$1")
  if [[ -e $f ]]; then cat "$f"; fi
}

# passfile_hosts: one host name a line, each a server this pod's clients may send a password to.
passfile_hosts() {
  local p hosts
  hosts=${PASSFILE_HOSTS:-$ARCHOP_PRIMARY_HOST}
  for p in $hosts $PEERS; do echo "${p%%:*}"; done | sort -u
}

# Passwords live in a passfile so primary_conninfo (visible through SHOW) never carries one. libpq ignores a
# passfile the group may read, so the mounted files (0440) cannot serve as one: this copy is 0600. Its lines
# name each server (libpq matches the host name dialled, not the address), so a password goes nowhere else.
write_passfile() {
  local f esc_s esc_r h
  f=$(passfile)
  esc_s=$(secret superuser | sed 's/[\\:]/\\&/g')
  esc_r=$(secret replication | sed 's/[\\:]/\\&/g')
  umask 077
  : >"$f.tmp"
  for h in $(passfile_hosts); do
    printf '%s:*:*:%s:%s\n%s:*:*:%s:%s\n' "$h" "$SUPERUSER" "$esc_s" "$h" "$REPL_USER" "$esc_r" >>"$f.tmp"
  done
  mv "$f.tmp" "$f"
  umask 022
}

# remote_sql HOST PORT SQL: one value from another server, as the superuser, failing fast.
remote_sql() {
  PGPASSFILE=$(passfile) psql "host=$1 port=$2 user=$SUPERUSER dbname=postgres connect_timeout=2 $CLIENT_TLS" \
    -XAtqc "$3" 2>/dev/null
}

# Prints "name|timeline" of the primary answering on the read-write address; fails if none does.
primary_on_rw() {
  local out
  out=$(remote_sql "$ARCHOP_PRIMARY_HOST" "$PRIMARY_PORT" \
    "select current_setting('cluster_name') || '|' || pg_is_in_recovery()::text || '|' ||
            ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int") || return 1
  [[ $out == *"|false|"* ]] || return 1
  echo "${out%%|*}|${out##*|}"
}

any_peer_alive() {
  local p host port
  for p in $PEERS; do
    host=${p%%:*}; port=${p#*:}; [[ $port == "$p" ]] && port=$PGPORT
    if [[ $host == "$POD_NAME" || $host == "$POD_NAME".* ]]; then continue; fi
    if pg_isready -q -d "host=$host port=$port $CLIENT_TLS" -t 2; then return 0; fi
  done
  return 1
}

local_timeline() {
  pg_controldata "$PGDATA" | sed -n "s/^Latest checkpoint's TimeLineID: *//p"
}

# Follower settings live in postgresql.auto.conf, where the operator's ALTER SYSTEM also writes them.
configure_follower() {
  local auto="$PGDATA/postgresql.auto.conf"
  touch "$auto"
  sed -i -E '/^[[:space:]]*(primary_conninfo|primary_slot_name|recovery_target_timeline|default_transaction_read_only|synchronous_standby_names)[[:space:]]*=/d' "$auto"
  # A leader that vanished (pod deleted, node gone) leaves its IP black-holed. The WAL receiver connects
  # asynchronously and ignores connect_timeout, so without tcp_user_timeout (which bounds the SYN retries
  # too) it hangs in connect() for minutes instead of resolving the name again.
  printf "primary_conninfo = 'host=%s port=%s user=%s passfile=%s application_name=%s %s %s'\n" \
    "$ARCHOP_PRIMARY_HOST" "$PRIMARY_PORT" "$REPL_USER" "$(passfile)" "$POD_NAME" "$CONN_TIMEOUTS" \
    "$CLIENT_TLS" >>"$auto"
  # Stream through this instance's slot only when the primary has it and it still holds WAL: Postgres does
  # not stream at all through a slot that does not exist. The operator creates the slots (and points the
  # follower at its slot once it sees it), so a missing one costs nothing but retention.
  if [[ $(slot_usable) == 1 ]]; then
    echo "primary_slot_name = '$SLOT'" >>"$auto"
  fi
  echo "recovery_target_timeline = 'latest'" >>"$auto"
  touch "$PGDATA/standby.signal"
}

# Prints 1 when the primary on rw has this instance's slot and the slot still holds WAL, else 0.
slot_usable() {
  local n
  n=$(remote_sql "$ARCHOP_PRIMARY_HOST" "$PRIMARY_PORT" \
    "select count(*) from pg_replication_slots where slot_name = '$SLOT' and wal_status is distinct from 'lost'") || n=0
  echo "${n:-0}"
}

wipe_pgdata() {
  find "$PGDATA" -mindepth 1 -delete
}

base_backup() {
  wipe_pgdata
  PGPASSFILE=$(passfile) pg_basebackup \
    -d "host=$ARCHOP_PRIMARY_HOST port=$PRIMARY_PORT user=$REPL_USER $CLIENT_TLS" \
    -D "$PGDATA" -X stream -c fast --no-password
  rm -f "$PGDATA/$MARKER"   # copied from the source; it is not ours
  configure_follower
}

wait_for_primary() {
  local waited=0
  until primary_on_rw >/dev/null; do
    if ((WAIT_PRIMARY > 0 && waited >= WAIT_PRIMARY)); then
      log "no primary answers on $ARCHOP_PRIMARY_HOST after ${waited}s"
      return 1
    fi
    sleep 1; waited=$((waited + 1))
  done
}

bootstrap() {
  log "initdb: $POD_NAME is the bootstrap leader and no peer answers"
  local pw=() su_file repl_file app_file
  su_file=$(secret_file superuser); repl_file=$(secret_file replication); app_file=$(secret_file app)
  # initdb reads the superuser's password from the mounted file itself (its first line).
  if [[ -s $su_file ]]; then pw=(--pwfile="$su_file"); fi
  # Checksums (and wal_log_hints in the config) are what pg_rewind needs later.
  initdb -D "$PGDATA" -U "$SUPERUSER" --data-checksums --encoding=UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 "${pw[@]}" >&2
  pg_ctl -D "$PGDATA" -w -o "-p $PGPORT -c listen_addresses='' -c unix_socket_directories=$RUN_DIR" start >&2
  {
    # The superuser may double as replication user (it can replicate anyway).
    if [[ $REPL_USER != "$SUPERUSER" ]]; then echo "CREATE ROLE \"$REPL_USER\" WITH REPLICATION LOGIN;"; fi
    if [[ $APP_USER != "$SUPERUSER" ]]; then echo "CREATE ROLE \"$APP_USER\" WITH LOGIN;"; fi
    echo "CREATE DATABASE \"$APP_DB\" OWNER \"$APP_USER\";"
    # psql reads each password from its mounted file itself, by a backquoted cat (:'var' is the path quoted
    # for the shell; :'rpw' the value quoted as a literal): never in argv or the environment, not even psql's.
    if [[ -s $repl_file ]]; then
      echo "\\set rpw \`cat :'repl_file'\`"
      echo "ALTER ROLE \"$REPL_USER\" PASSWORD :'rpw';"
    fi
    if [[ -s $app_file ]]; then
      echo "\\set apw \`cat :'app_file'\`"
      echo "ALTER ROLE \"$APP_USER\" PASSWORD :'apw';"
    fi
  } | psql -h "$RUN_DIR" -p "$PGPORT" -U "$SUPERUSER" -d postgres -X -q -v ON_ERROR_STOP=1 \
      -v repl_file="$repl_file" -v app_file="$app_file" >&2
  pg_ctl -D "$PGDATA" -w -m fast stop >&2
}

# The old leader comes back after a failover: rewind it onto the new timeline, or fall back to a copy.
rejoin() {
  local method=rewind
  log "rejoining as follower of $1 by pg_rewind"
  # pg_rewind reads the source's pg_control: make sure it already names the new timeline.
  remote_sql "$ARCHOP_PRIMARY_HOST" "$PRIMARY_PORT" "checkpoint" >/dev/null || true
  if ! pg_rewind --target-pgdata="$PGDATA" --progress \
    --source-server="host=$ARCHOP_PRIMARY_HOST port=$PRIMARY_PORT user=$SUPERUSER dbname=postgres passfile=$(passfile) connect_timeout=5 $CLIENT_TLS" >&2; then
    log "pg_rewind failed; taking a fresh base backup instead"
    method=basebackup
    base_backup
  fi
  configure_follower
  rm -f "$PGDATA/$FENCED"   # a follower now: the fence has done its job
  printf 'method=%s pod=%s at=%s\n' "$method" "$POD_NAME" "$(date +%s)" >"$PGDATA/$MARKER"
}

# The operator stopped this follower with the rebuild marker: it needs WAL the primary no longer has, so
# neither streaming nor pg_rewind can bring it back. Wipe PGDATA and clone the primary afresh. A file next to
# PGDATA says a rebuild is under way, so a base backup that fails half-way (PGDATA wiped, the marker gone)
# is taken again at the next start instead of starting what is left.
rebuild() {
  local pending
  pending=$(rebuild_pending)
  log "rebuilding from a fresh base backup of $1 (the operator's rebuild marker)"
  touch "$pending"; sync "$pending"
  fresh_slot
  base_backup
  rm -f "$PGDATA/$FENCED" "$pending"
  printf 'method=rebuild pod=%s at=%s\n' "$POD_NAME" "$(date +%s)" >"$PGDATA/$MARKER"
}

# This instance's slot on the primary, fresh (a lost one is dropped first; nothing streams through it while we
# are down): it holds the WAL from before the base backup until we stream through it. The operator creates it
# too; this is in case its drop of the lost slot raced with our last WAL receiver's retries. Best effort.
fresh_slot() {
  remote_sql "$ARCHOP_PRIMARY_HOST" "$PRIMARY_PORT" \
    "select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots
      where slot_name = '$SLOT' and wal_status = 'lost' and not active" >/dev/null || true
  remote_sql "$ARCHOP_PRIMARY_HOST" "$PRIMARY_PORT" \
    "select count(pg_create_physical_replication_slot('$SLOT', true))
      where not exists (select from pg_replication_slots where slot_name = '$SLOT')" >/dev/null || true
}

rebuild_pending() { echo "$(dirname "$PGDATA")/$POD_NAME.rebuilding"; }

# After a crash (kill -9 of the postmaster) the lock file stays behind; in a shared process namespace its
# pid may now belong to another process, which would make postgres refuse to start.
clear_stale_pidfile() {
  local pid
  pid=$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null) || return 0
  if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == postgres* ]]; then return 0; fi
  rm -f "$PGDATA/postmaster.pid"
}

prepare() {
  : "${PGDATA:?}" "${POD_NAME:?}" "${ARCHOP_PRIMARY_HOST:?}"
  mkdir -p "$PGDATA" "$RUN_DIR"
  chmod 700 "$PGDATA"
  write_passfile
  clear_stale_pidfile
}

# Decide how to start; prints the mode (bootstrap, clone, follower, rewind, primary).
prepare_pgdata() {
  local found name tli waited=0
  if [[ -f $PGDATA/$REBUILD || -f $(rebuild_pending) ]]; then
    # Never onto itself: only another primary can be the source.
    log "the operator asked for a rebuild: waiting for a primary on $ARCHOP_PRIMARY_HOST to clone"
    until found=$(primary_on_rw) && name=${found%%|*} && [[ $name != "$POD_NAME" ]]; do sleep 1; done
    rebuild "$name"; echo rebuild
  elif [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ $POD_NAME == "$BOOTSTRAP_LEADER" ]] && ! primary_on_rw >/dev/null && ! any_peer_alive; then
      bootstrap; echo bootstrap
    else
      log "empty PGDATA: cloning the current primary"
      wait_for_primary
      base_backup; echo clone
    fi
  elif [[ -f $PGDATA/standby.signal ]]; then
    # A follower that was ahead of the promoted one cannot follow the new timeline without a rewind;
    # pg_rewind is a no-op when the histories agree.
    if found=$(primary_on_rw); then
      tli=${found##*|}
      if [[ $tli != "$(local_timeline)" ]]; then
        rejoin "${found%%|*}"; echo rewind; return
      fi
    fi
    configure_follower_keep_conninfo; echo follower
  elif [[ -f $PGDATA/$FENCED ]]; then
    log "fenced by the operator: waiting for the new leader on $ARCHOP_PRIMARY_HOST to rejoin it"
    until found=$(primary_on_rw) && name=${found%%|*} && [[ $name != "$POD_NAME" ]]; do sleep 1; done
    rejoin "$name"; echo rewind
  else
    # The operator fails over within a second or two of a leader's crash, often while this container
    # restarts. Coming up as a primary then means being fenced and restarted once more before the rewind,
    # so look for the new primary for a moment first.
    while :; do
      if found=$(primary_on_rw) && name=${found%%|*} && [[ $name != "$POD_NAME" ]]; then
        rejoin "$name"; echo rewind; return
      fi
      ((waited >= RESTART_GRACE)) && break
      sleep 1; waited=$((waited + 1))
    done
    log "was the primary and no other primary answers after ${waited}s: starting as primary"
    echo primary
  fi
}

# write_hba open|gated. A primary that starts without the operator's word (a crash restart of the leader)
# is gated: only the superuser (the operator) and replication may connect over TCP, so no application
# write can be acknowledged before the leader lease holds. The lease agent (fence.sh) opens the gate once
# the operator renews the lease or every follower the operator may promote streams from this instance;
# until then a failover elsewhere cannot overlap with writes here (docs/failover.md, "Start gate").
write_hba() {
  if [[ $1 == gated ]]; then
    touch "$GATE"
    awk -v su="\"$SUPERUSER\"" '$1 ~ /^host/ && $2 != "replication" { $3 = su } { print }' \
      "$HBA_FILE" >"$ACTIVE_HBA.tmp"
  else
    cp "$HBA_FILE" "$ACTIVE_HBA.tmp"
    rm -f "$GATE"
  fi
  mv "$ACTIVE_HBA.tmp" "$ACTIVE_HBA"
}

# An existing follower keeps the primary_conninfo the operator set last (ALTER SYSTEM), if any, unless it
# does not verify its server (written before TLS): then it points at rw again, and the operator repoints it.
configure_follower_keep_conninfo() {
  local want='^[[:space:]]*primary_conninfo[[:space:]]*='
  if [[ ${ARCHOP_SSLMODE:-verify-full} == verify-full ]]; then want="$want.*sslmode=verify-full"; fi
  if ! grep -Eq "$want" "$PGDATA/postgresql.auto.conf" 2>/dev/null; then
    configure_follower
  fi
}

run_postgres() {
  # shellcheck disable=SC2086  # EXTRA_OPTS is a list of options
  exec postgres -D "$PGDATA" -p "$PGPORT" \
    -c config_file="$CONF_DIR/postgresql.conf" -c hba_file="$ACTIVE_HBA" \
    -c listen_addresses="$LISTEN" -c unix_socket_directories="$RUN_DIR" -c cluster_name="$POD_NAME" \
    -c ssl_cert_file="$TLS_DIR/tls.crt" -c ssl_key_file="$TLS_DIR/tls.key" \
    $EXTRA_OPTS
}

# One postmaster per volume. A force-deleted pod's containers may still run while its replacement starts on
# the same node and volume (seen on kind: 1.2 s of overlap, two postmasters on one PGDATA; postmaster.pid
# cannot tell, the old one is in another PID namespace). fd 9 stays open through `exec postgres` and is
# inherited by every backend, so the lock is held until the last process of this instance is gone.
lock_volume() {
  local f
  f=${ARCHOP_LOCKFILE:-$(dirname "$PGDATA")/archop.lock}
  exec 9>>"$f"
  if ! flock -n 9; then
    log "another instance still runs on this volume; waiting up to ${LOCK_WAIT}s for it to exit"
    flock -w "$LOCK_WAIT" 9 || { log "the volume is still locked; giving up (the pod restarts)"; exit 1; }
  fi
}

main() {
  lock_volume
  prepare
  local mode
  mode=$(prepare_pgdata)
  log "start mode: $mode"
  if [[ $mode == primary ]]; then write_hba gated; else write_hba open; fi
  run_postgres
}

if [[ ${ARCHOP_SOURCE_ONLY:-0} != 1 ]]; then
  main "$@"
fi

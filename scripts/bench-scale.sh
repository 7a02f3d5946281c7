#!/usr/bin/env bash
# `make bench-scale`: pgconn_exporter with thousands of targets through PgBouncer in front of one PostgreSQL.
#
# For each N in BENCH_SCALE_TARGETS (one run each, everything started afresh):
# 1. A throwaway PostgreSQL (scripts/lib-postgres.sh) and a PgBouncer on free 127.0.0.1 ports, both as the
#    postgres OS user when run as root. PgBouncer: pool_mode transaction, default_pool_size BENCH_SCALE_POOL_SIZE,
#    auth_type scram-sha-256 with an auth_file holding the role's SCRAM secret copied from pg_authid, so every
#    exporter login is a full client-side SCRAM exchange (and PgBouncer logs in to the server with the keys that
#    exchange gives it).
# 2. pgconn_exporter with N targets t0001.. (distinct names, the same DSN to PgBouncer, a password file),
#    probe_interval 5s, login_interval 60s: time to /-/ready and to all targets up.
# 3. Steady state for BENCH_SCALE_SECONDS, /metrics scraped every 15 s: CPU (utime+stime), RSS, loop lag p99 from
#    the histogram's bucket deltas, the overdue gauge, probes run against N x window / 5s.
# 4. /metrics: size, series, 100 sequential GETs (p50/p99/max), wrk -t2 -c10 with and without gzip.
# 5. PgBouncer restarted (SIGTERM by PID, its immediate shutdown, then started on the same port): every session
#    drops and reconnects with SCRAM. Time from accepting again to all N up, loop lag p99 in the storm, the most
#    connects at once (PgBouncer's SHOW LISTS login_clients, the exporter's connects_in_progress), timeouts.
# 6. PostgreSQL restarted behind PgBouncer (SIGQUIT to the postmaster, what `pg_ctl stop -m immediate` sends, then
#    started on the same port): time to all up, the most server backends (never above the pool), timeouts.
# 7. A table with each figure, its goal and "met"/"not met", recorded in docs/benchmarks.md as the block
#    <!-- bench-scale:N --> ... <!-- /bench-scale:N -->, replaced on each run.
# Every wait has a deadline; every process started here is stopped by PID on exit, and the temp dir removed.
#
# Environment:
#   BENCH_SCALE_TARGETS    target counts, one run each (default "1000 5000")
#   BENCH_SCALE_SECONDS    steady-state window (default 60)
#   BENCH_SCALE_SCRAPES    sequential GETs of /metrics (default 100)
#   BENCH_SCALE_WRK_SECONDS  each wrk run (default 5)
#   BENCH_SCALE_POOL_SIZE  PgBouncer's default_pool_size (default 20)
#   BENCH_SCALE_SETTLE     seconds every target must stay up to count as recovered (default 10)
#   BENCH_DOC              the results file (default docs/benchmarks.md; empty: do not write it)
#   PGCONN_BIN             the exporter binary (default .build/release/pgconn_exporter)
#   PGBOUNCER_BIN          (default /usr/sbin/pgbouncer)
#   PGCONN_PG_BIN          PostgreSQL's bin dir (default: the newest /usr/lib/postgresql/*/bin)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_COUNTS=${BENCH_SCALE_TARGETS:-1000 5000}
DURATION=${BENCH_SCALE_SECONDS:-60}
SCRAPES=${BENCH_SCALE_SCRAPES:-100}
WRK_SECONDS=${BENCH_SCALE_WRK_SECONDS:-5}
POOL_SIZE=${BENCH_SCALE_POOL_SIZE:-20}
SETTLE=${BENCH_SCALE_SETTLE:-10}
DOC=${BENCH_DOC-$ROOT/docs/benchmarks.md}
BIN=${PGCONN_BIN:-$ROOT/.build/release/pgconn_exporter}
BOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
MEASURE=$ROOT/scripts/bench_scale_measure.py
# shellcheck source=lib-postgres.sh
source "$ROOT/scripts/lib-postgres.sh"
# shellcheck source=lib-bench.sh
source "$ROOT/scripts/lib-bench.sh"

say() { printf 'bench-scale: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive whole number (got '$2')"; }
for n in $TARGET_COUNTS; do positive BENCH_SCALE_TARGETS "$n"; done
[[ -n ${TARGET_COUNTS// /} ]] || die "BENCH_SCALE_TARGETS is empty"
positive BENCH_SCALE_SECONDS "$DURATION"
positive BENCH_SCALE_SCRAPES "$SCRAPES"
positive BENCH_SCALE_WRK_SECONDS "$WRK_SECONDS"
positive BENCH_SCALE_POOL_SIZE "$POOL_SIZE"
positive BENCH_SCALE_SETTLE "$SETTLE"
pg_find_bin
[[ -x $BIN ]] || die "$BIN is missing (run: make build)"
[[ -x $BOUNCER_BIN ]] || die "$BOUNCER_BIN is missing (run: make deps)"
command -v python3 >/dev/null || die "python3 is needed for the measurements"
command -v wrk >/dev/null || say "wrk is missing: no throughput figures (make bench-scale installs it)"

# Every session and login check is a descriptor in the exporter and one in PgBouncer: raise the soft limit to the
# hard one (the exporter raises its own too; PgBouncer and the servers inherit this one).
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=$(cat /proc/sys/fs/nr_open)
ulimit -n "$hard" 2>/dev/null || say "could not raise the open-file limit to $hard"
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------------------------------------------------------
# One run per target count, each in its own process (its own temp dir, servers and EXIT trap).

if [[ ${1:-} != --one ]]; then
    failed=()
    for n in $TARGET_COUNTS; do
        bash "${BASH_SOURCE[0]}" --one "$n" || failed+=("$n")
    done
    ((${#failed[@]} == 0)) || die "the run(s) for ${failed[*]} target(s) failed (see above)"
    exit 0
fi

TARGETS=$2
positive "the target count" "$TARGETS"
((NOFILE >= TARGETS + 1200)) ||
    die "$TARGETS targets need an open-file limit of at least $((TARGETS + 1200)) (ulimit -n is $NOFILE)"

pg_run_as_postgres
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
pg_make_workdir bench-scale
PASSWORD_FILE=$WORK/bench_monitor.password
PASSFILE=$WORK/pgpass
CONFIG=$WORK/pgconn_exporter.yml
PGCONN_LOG=$WORK/pgconn_exporter.log
BOUNCER_DIR=$WORK/pgbouncer
BOUNCER_INI=$BOUNCER_DIR/pgbouncer.ini
BOUNCER_PIDFILE=$BOUNCER_DIR/pgbouncer.pid
BOUNCER_LOG=$BOUNCER_DIR/pgbouncer.log
RESULTS=$WORK/results
mkdir "$RESULTS"
PGCONN_PID=
BOUNCER_PID=
BOUNCER_WRAPPER_PIDS=()
STORM_PID=

# ---------------------------------------------------------------------------------------------------------------
# Process lifecycle (stop_pid, sql, require_alive: scripts/lib-bench.sh)

# Starts PgBouncer in the foreground of its own session (as the postgres OS user when root: it refuses root) and
# waits (10 ms steps, 30 s at most) until it answers on its port and has written its PID file; sets BOUNCER_PID
# and writes the epoch of that moment to the file $1 when given.
start_bouncer() {
    local accepted_file=${1:-}
    rm -f "$BOUNCER_PIDFILE"
    # runuser's PAM session (pam_limits) puts the soft open-file limit back to 1024; the shell raises it again.
    # shellcheck disable=SC2016 # expanded by that shell
    setsid "${AS_PG[@]}" bash -c 'ulimit -n "$1" && exec "$2" "$3"' pgbouncer "$NOFILE" "$BOUNCER_BIN" \
        "$BOUNCER_INI" >>"$BOUNCER_LOG" 2>&1 </dev/null &
    BOUNCER_WRAPPER_PIDS+=($!)
    for _ in $(seq 3000); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$BOUNCER_PORT" -d pgbouncer -U bench_monitor -t 1 &&
            [[ -s $BOUNCER_PIDFILE ]]; then
            [[ -z $accepted_file ]] || date +%s.%N >"$accepted_file"
            BOUNCER_PID=$(head -n 1 "$BOUNCER_PIDFILE")
            return 0
        fi
        kill -0 "${BOUNCER_WRAPPER_PIDS[-1]}" 2>/dev/null || die "PgBouncer exited during startup"
        sleep 0.01
    done
    die "PgBouncer did not accept connections within 30s"
}

# SIGTERM is PgBouncer's immediate shutdown: every client and server connection closed at once.
stop_bouncer() {
    if [[ -z $BOUNCER_PID && -s $BOUNCER_PIDFILE ]]; then BOUNCER_PID=$(head -n 1 "$BOUNCER_PIDFILE"); fi
    if [[ -n $BOUNCER_PID ]]; then stop_pid "$BOUNCER_PID" PgBouncer; fi
    BOUNCER_PID=
    local pid
    for pid in "${BOUNCER_WRAPPER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    BOUNCER_WRAPPER_PIDS=()
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -n $STORM_PID ]] && stop_pid "$STORM_PID" "the storm measurement"
    [[ -n $PGCONN_PID ]] && stop_pid "$PGCONN_PID" pgconn_exporter
    stop_bouncer
    pg_shutdown
    bench_cleanup_end "$status" "$SERVER_LOG" "$BOUNCER_LOG" "$PGCONN_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

measure() { python3 "$MEASURE" "$@"; }
exporter_args() { echo --address "127.0.0.1:$PGCONN_PORT" --pid "$PGCONN_PID" --targets "$TARGETS"; }
poller_args() {
    echo --psql "$PG_BIN/psql" --passfile "$PASSFILE" --bouncer-port "$BOUNCER_PORT" --pg-socket "$SOCKET_DIR" \
        --pg-port "$PORT"
}

# storm NAME STOP... -- START...: measures a restart; the measurement runs in the background from before the stop
# (it writes $WORK/NAME.go once its first snapshot is taken) and learns the moment of accepting again from
# $WORK/NAME.accepted, which START writes.
storm() {
    local name=$1
    shift
    rm -f "$WORK/$name.go" "$WORK/$name.accepted"
    # shellcheck disable=SC2046 # the argument helpers print flags and values without spaces
    python3 "$MEASURE" storm $(exporter_args) $(poller_args) --kind "$name" --out "$RESULTS/$name.json" \
        --go-file "$WORK/$name.go" --accepted-file "$WORK/$name.accepted" --settle "$SETTLE" \
        --timeout $((120 + SETTLE + TARGETS / 50)) &
    STORM_PID=$!
    for _ in $(seq 3000); do
        [[ -e $WORK/$name.go ]] && break
        kill -0 "$STORM_PID" 2>/dev/null || die "the $name measurement exited before its start"
        sleep 0.02
    done
    [[ -e $WORK/$name.go ]] || die "the $name measurement did not start within 60s"
}
storm_wait() { # storm_wait NAME: waits for the measurement (it has its own deadline)
    local status=0
    wait "$STORM_PID" || status=$?
    STORM_PID=
    ((status == 0)) || die "the $1 measurement failed (status $status)"
    require_alive "the $1 restart"
}

# ---------------------------------------------------------------------------------------------------------------
# 1. PostgreSQL and PgBouncer

pg_initdb
PORT=$(pg_free_port)
say "starting PostgreSQL on 127.0.0.1:$PORT"
pg_start_server -c max_connections=$((POOL_SIZE + 30))
pg_create_login_role bench_monitor "$PASSWORD_FILE"
SCRAM_SECRET=$(sql "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench_monitor'")
[[ $SCRAM_SECRET == SCRAM-SHA-256\$* ]] || die "bench_monitor's password is not a SCRAM secret"

BOUNCER_PORT=$(pg_free_port)
mkdir "$BOUNCER_DIR"
(umask 077 && printf '"bench_monitor" "%s"\n' "$SCRAM_SECRET" >"$BOUNCER_DIR/userlist.txt")
# max_client_conn: every session and login check (2 N) and room for the pollers; server_login_retry 1 s (default
# 15 s) so that a PostgreSQL restart is retried promptly; connection logs off (thousands of lines a storm).
cat >"$BOUNCER_INI" <<INI
[databases]
postgres = host=127.0.0.1 port=$PORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $BOUNCER_DIR/userlist.txt
stats_users = bench_monitor
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((2 * TARGETS + 200))
server_login_retry = 1
log_connections = 0
log_disconnections = 0
pidfile = $BOUNCER_PIDFILE
logfile =
INI
touch "$BOUNCER_LOG"
if ((${#AS_PG[@]})); then chown -R postgres: "$BOUNCER_DIR"; fi
# psql's password for the pollers (PgBouncer's admin console), never on a command line.
(umask 077 && printf '127.0.0.1:%s:pgbouncer:bench_monitor:%s\n' "$BOUNCER_PORT" "$(cat "$PASSWORD_FILE")" \
    >"$PASSFILE")
say "starting PgBouncer $("$BOUNCER_BIN" --version | head -n 1 | awk '{ print $2 }') on 127.0.0.1:$BOUNCER_PORT" \
    "(pool $POOL_SIZE, max_client_conn $((2 * TARGETS + 200)), open files $NOFILE)"
start_bouncer
BOUNCER_NOFILE=$(awk '/^Max open files/ { print $4 }' "/proc/$BOUNCER_PID/limits")
((BOUNCER_NOFILE >= TARGETS + 1200)) || die "PgBouncer's open-file limit is only $BOUNCER_NOFILE"

# ---------------------------------------------------------------------------------------------------------------
# 2. pgconn_exporter with N targets, and its start-up

WIDTH=$((${#TARGETS} > 4 ? ${#TARGETS} : 4))
{
    echo "defaults:"
    echo "  probe_interval: 5s"
    echo "  probe_timeout: 2s"
    echo "  connect_timeout: 5s"
    echo "  login_interval: 60s"
    echo "targets:"
    dsn="postgresql://bench_monitor@127.0.0.1:$BOUNCER_PORT/postgres?sslmode=disable"
    for ((i = 1; i <= TARGETS; i++)); do
        printf "  - name: t%0${WIDTH}d\n" "$i"
        echo "    dsn: $dsn"
        echo "    password_file: $PASSWORD_FILE"
    done
} >"$CONFIG"

PGCONN_PORT=$(pg_free_port)
say "starting pgconn_exporter ($TARGETS targets) on 127.0.0.1:$PGCONN_PORT"
started=$(date +%s.%N)
"$BIN" --config.file="$CONFIG" --web.listen-address="127.0.0.1:$PGCONN_PORT" --log.level=warn \
    >"$PGCONN_LOG" 2>&1 </dev/null &
PGCONN_PID=$!
# shellcheck disable=SC2046
measure startup $(exporter_args) --start "$started" --timeout $((60 + TARGETS / 20)) \
    --out "$RESULTS/startup.json" >/dev/null
require_alive "startup"
read -r READY_S ALL_UP_S < <(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(*("None" if d[k] is None else f"{d[k]:.2f}" for k in ("ready_s", "all_up_s")))' "$RESULTS/startup.json")
[[ $ALL_UP_S != None ]] || die "not every target was up within $((60 + TARGETS / 20))s of the start"
say "ready after ${READY_S}s, all $TARGETS up after ${ALL_UP_S}s; settling ${SETTLE}s (first login checks)"
sleep "$SETTLE" # the first login checks start within min(login_interval, 10s); not a wait for a condition

# ---------------------------------------------------------------------------------------------------------------
# 3. Steady state, 4. scrapes

say "steady state for ${DURATION}s"
# shellcheck disable=SC2046
measure steady $(exporter_args) $(poller_args) --bouncer-pid "$BOUNCER_PID" --seconds "$DURATION" \
    --out "$RESULTS/steady.json" >/dev/null
require_alive "the steady-state window"
say "$SCRAPES sequential scrapes, then wrk -t2 -c10 for ${WRK_SECONDS}s (plain, gzip)"
# shellcheck disable=SC2046
measure scrape $(exporter_args) --count "$SCRAPES" --wrk-seconds "$WRK_SECONDS" --out "$RESULTS/scrape.json" \
    >/dev/null
require_alive "the scrapes"

# ---------------------------------------------------------------------------------------------------------------
# 5. PgBouncer restart, 6. PostgreSQL restart

say "PgBouncer restart (SIGTERM by PID, started again on port $BOUNCER_PORT)"
storm bouncer
stop_bouncer
start_bouncer "$WORK/bouncer.accepted"
storm_wait bouncer

say "PostgreSQL restart behind PgBouncer (SIGQUIT to the postmaster, started again on port $PORT)"
storm server
kill -QUIT "$POSTMASTER_PID"
for _ in $(seq 1000); do kill -0 "$POSTMASTER_PID" 2>/dev/null || break; sleep 0.01; done
kill -0 "$POSTMASTER_PID" 2>/dev/null && die "the postmaster did not exit within 10s of SIGQUIT"
pg_start_server -c max_connections=$((POOL_SIZE + 30))
date +%s.%N >"$WORK/server.accepted"
storm_wait server

# ---------------------------------------------------------------------------------------------------------------
# 7. Report

PG_VERSION=$(sql "SHOW server_version")
BUILD_INFO=$(curl -fsS --max-time 30 "http://127.0.0.1:$PGCONN_PORT/metrics" | grep -m 1 '^pgconn_exporter_build_info{' ||
    true)
label() { sed -n "s/.*[{,]$1=\"\([^\"]*\)\".*/\1/p" <<<"$BUILD_INFO"; }
LIBPQ_VERSION=$(label libpq_version)
BUILD=$(label version)
BOUNCER_VERSION=$("$BOUNCER_BIN" --version | head -n 1 | awk '{ print $2 }')
DATE=$(date -u +'%Y-%m-%d %H:%M UTC')
MACHINE="$(bench_machine); PostgreSQL $PG_VERSION,"
MACHINE+=" PgBouncer $BOUNCER_VERSION, libpq ${LIBPQ_VERSION:-?}; pgconn_exporter ${BUILD:-?}"
MACHINE+=" ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
MACHINE+="; open files $NOFILE; load average (1, 5, 15 min) $LOAD_AT_START at the start,"
MACHINE+=" $(cut -d' ' -f1-3 /proc/loadavg) at the end"
SETUP="$TARGETS targets through PgBouncer (pool_mode transaction, default_pool_size $POOL_SIZE, scram-sha-256)"
SETUP+=" to one PostgreSQL; probe_interval 5s, probe_timeout 2s, login_interval 60s, connect_timeout 5s;"
SETUP+=" steady window ${DURATION}s; recovered = every target up and staying up for ${SETTLE}s"

measure report --dir "$RESULTS" --targets "$TARGETS" --pool-size "$POOL_SIZE" >/dev/null
echo
echo "pgconn_exporter scale benchmark, $DATE"
echo "$MACHINE"
echo "$SETUP"
echo
cat "$RESULTS/table.md"
echo

if [[ -n $DOC ]]; then
    {
        echo "<!-- bench-scale:$TARGETS -->"
        echo "### $TARGETS targets through PgBouncer ($DATE)"
        echo
        echo "Machine: $MACHINE."
        echo
        echo "Setup: $SETUP."
        echo
        cat "$RESULTS/table.md"
        echo "<!-- /bench-scale:$TARGETS -->"
    } >"$RESULTS/block.md"
    bench_record "$DOC" "<!-- bench-scale:$TARGETS -->" "<!-- /bench-scale:$TARGETS -->" \
        "<!-- bench-scale:results -->" "$RESULTS/block.md"
    say "recorded in ${DOC#"$ROOT"/}"
fi

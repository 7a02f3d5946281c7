# shellcheck shell=bash
# A throwaway PostgreSQL for scripts/run-local.sh and scripts/bench.sh, which source this file: a cluster in a temp
# dir, a server on a free 127.0.0.1 port in its own session (as the postgres OS user when run as root), stopped by
# PID.
#
# The caller runs with `set -euo pipefail` and defines `say` and `die` (with its own prefix). The functions share
# these globals: PG_BIN (pg_find_bin); AS_PG (pg_run_as_postgres); WORK, DATA, SOCKET_DIR, SERVER_LOG
# (pg_make_workdir); PORT (set by the caller, usually from pg_free_port); POSTMASTER_PID, SERVER_WRAPPER_PIDS
# (pg_start_server).

# Sets PG_BIN: $PGCONN_PG_BIN, else the newest /usr/lib/postgresql/*/bin; dies without a server there.
pg_find_bin() {
    PG_BIN=${PGCONN_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
    [[ -n $PG_BIN && -x $PG_BIN/postgres ]] ||
        die "no PostgreSQL server under /usr/lib/postgresql/*/bin (run: make deps)"
}

# Sets AS_PG, the command prefix for initdb, postgres and psql: they refuse to run as root, so as root they run as
# the postgres OS user; otherwise empty.
pg_run_as_postgres() {
    AS_PG=()
    if [[ $(id -u) == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the postgres OS user (run: make deps)"
        AS_PG=(runuser -u postgres --)
    fi
}

# pg_make_workdir NAME: creates ${TMPDIR:-/tmp}/pgconn-NAME.XXXXXX and sets WORK, DATA, SOCKET_DIR and SERVER_LOG
# below it; no server is running yet.
pg_make_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgconn-$1.XXXXXX")
    DATA=$WORK/data
    SOCKET_DIR=$WORK/socket
    SERVER_LOG=$WORK/server.log
    POSTMASTER_PID=
    SERVER_WRAPPER_PIDS=()
}

# Creates the socket dir and the server log (owned by the server's user) and runs initdb in $DATA: trust over the
# socket, SCRAM over TCP. Dies with initdb's output if it fails.
pg_initdb() {
    mkdir -m 700 "$SOCKET_DIR"
    touch "$SERVER_LOG"
    if ((${#AS_PG[@]})); then chown postgres: "$WORK" "$SOCKET_DIR" "$SERVER_LOG"; fi

    say "initdb in $DATA"
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 || {
        cat "$WORK/initdb.log" >&2
        die "initdb failed"
    }
}

# Prints a TCP port on 127.0.0.1 that is free now (python3 binds port 0; without python3, random probes).
pg_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free port"
}

# pg_start_server [POSTGRES_ARG...]: starts the postmaster on 127.0.0.1:$PORT, logging to $SERVER_LOG, waits
# (10 ms steps, 30 s at most) until it accepts connections, and sets POSTMASTER_PID. It gets its own session, so
# a Ctrl-C reaches the caller's foreground processes only and the server is stopped afterwards, in order.
pg_start_server() {
    setsid "${AS_PG[@]}" "$PG_BIN/postgres" -D "$DATA" -p "$PORT" -k "$SOCKET_DIR" \
        -c listen_addresses=127.0.0.1 "$@" >>"$SERVER_LOG" 2>&1 </dev/null &
    SERVER_WRAPPER_PIDS+=($!)
    for _ in $(seq 3000); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
            POSTMASTER_PID=$(head -n 1 "$DATA/postmaster.pid")
            return 0
        fi
        kill -0 "${SERVER_WRAPPER_PIDS[-1]}" 2>/dev/null || die "PostgreSQL exited during startup"
        sleep 0.01
    done
    die "PostgreSQL did not accept connections within 30s"
}

# pg_psql [PSQL_ARG...]: psql as the superuser over the unix socket, without ~/.psqlrc.
pg_psql() {
    "${AS_PG[@]}" "$PG_BIN/psql" -X -q -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres "$@"
}

# pg_create_login_role ROLE PASSWORD_FILE: a login role in pg_monitor with a random password; the password goes to
# a mode-600 file and to psql on stdin, never on a command line.
pg_create_login_role() {
    local role=$1 password_file=$2
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$password_file")
    pg_psql -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE ROLE $role LOGIN PASSWORD '$(cat "$password_file")';
GRANT pg_monitor TO $role;
SQL
}

# Stops the postmaster: fast shutdown (SIGINT), up to 10 s, then SIGQUIT and, 2 s later, SIGKILL.
pg_stop_server() {
    [[ -n $POSTMASTER_PID ]] || return 0
    kill -INT "$POSTMASTER_PID" 2>/dev/null || return 0 # fast shutdown
    for _ in $(seq 100); do
        kill -0 "$POSTMASTER_PID" 2>/dev/null || return 0
        sleep 0.1
    done
    say "PostgreSQL did not stop within 10s; sending SIGQUIT"
    kill -QUIT "$POSTMASTER_PID" 2>/dev/null || true
    sleep 2
    kill -KILL "$POSTMASTER_PID" 2>/dev/null || true
}

# For the caller's EXIT trap: stops the server, also one that started but was never seen ready (its PID is read
# from postmaster.pid), and reaps the setsid wrappers.
pg_shutdown() {
    if [[ -z $POSTMASTER_PID && -r $DATA/postmaster.pid ]]; then
        POSTMASTER_PID=$(head -n 1 "$DATA/postmaster.pid")
    fi
    pg_stop_server
    local pid
    for pid in "${SERVER_WRAPPER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

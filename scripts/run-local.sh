#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on a free 127.0.0.1 port and runs pgconn_exporter against it in the foreground.
# Ctrl-C (or the exporter exiting) stops the exporter, then the server, and removes every temp file.
#
# Environment:
#   PGCONN_LISTEN    the exporter's --web.listen-address (default :9818)
#   PGCONN_BIN       the exporter binary (default .build/release/pgconn_exporter)
#   PGCONN_CONFIG    the config template (default config/pgconn_exporter.yml; @PGPORT@, @SOCKET_DIR@ and
#                    @PASSWORD_FILE@ are replaced)
#   PGCONN_PG_BIN    PostgreSQL's bin dir (default: the newest /usr/lib/postgresql/*/bin)
# Extra arguments are passed to the exporter.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LISTEN=${PGCONN_LISTEN:-:9818}
BIN=${PGCONN_BIN:-$ROOT/.build/release/pgconn_exporter}
TEMPLATE=${PGCONN_CONFIG:-$ROOT/config/pgconn_exporter.yml}

say() { printf 'run-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

PG_BIN=${PGCONN_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[[ -n $PG_BIN && -x $PG_BIN/postgres ]] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin (run: make deps)"
[[ -x $BIN ]] || die "$BIN is missing (run: make build)"
[[ -r $TEMPLATE ]] || die "cannot read the config template $TEMPLATE"

# initdb and postgres refuse to run as root: as root, run them as the postgres OS user.
AS_PG=()
if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres OS user (run: make deps)"
    AS_PG=(runuser -u postgres --)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgconn-local.XXXXXX")
DATA=$WORK/data
SOCKET_DIR=$WORK/socket
PASSWORD_FILE=$WORK/pgconn_monitor.password
CONFIG=$WORK/pgconn_exporter.yml
SERVER_LOG=$WORK/server.log
POSTMASTER_PID=
SERVER_WRAPPER_PID=
EXPORTER_PID=

stop_server() {
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

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $EXPORTER_PID ]] && kill -0 "$EXPORTER_PID" 2>/dev/null; then
        kill -TERM "$EXPORTER_PID" 2>/dev/null || true
        wait "$EXPORTER_PID" 2>/dev/null || true
    fi
    if [[ -z $POSTMASTER_PID && -r $DATA/postmaster.pid ]]; then
        POSTMASTER_PID=$(head -n 1 "$DATA/postmaster.pid")
    fi
    stop_server
    if [[ -n $SERVER_WRAPPER_PID ]]; then wait "$SERVER_WRAPPER_PID" 2>/dev/null || true; fi
    if ((status != 0 && status != 130 && status != 143)) && [[ -s $SERVER_LOG ]]; then
        say "last lines of the server log:"
        tail -n 20 "$SERVER_LOG" >&2
    fi
    rm -rf "$WORK"
    say "stopped; removed $WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
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

mkdir -m 700 "$SOCKET_DIR"
touch "$SERVER_LOG"
if ((${#AS_PG[@]})); then chown postgres: "$WORK" "$SOCKET_DIR" "$SERVER_LOG"; fi

say "initdb in $DATA"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 || {
    cat "$WORK/initdb.log" >&2
    die "initdb failed"
}

PORT=$(free_port)
say "starting PostgreSQL on 127.0.0.1:$PORT (log: $SERVER_LOG)"
# Its own session, so Ctrl-C reaches the exporter only and the server is stopped afterwards, in order.
setsid "${AS_PG[@]}" "$PG_BIN/postgres" -D "$DATA" -p "$PORT" -k "$SOCKET_DIR" \
    -c listen_addresses=127.0.0.1 >>"$SERVER_LOG" 2>&1 </dev/null &
SERVER_WRAPPER_PID=$!

for _ in $(seq 300); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then break; fi
    kill -0 "$SERVER_WRAPPER_PID" 2>/dev/null || die "PostgreSQL exited during startup"
    sleep 0.1
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || die "PostgreSQL did not accept connections within 30s"
POSTMASTER_PID=$(head -n 1 "$DATA/postmaster.pid")

# The monitoring role: its password goes to a mode-600 file and to psql on stdin, never on a command line.
(umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$PASSWORD_FILE")
"${AS_PG[@]}" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres \
    >/dev/null <<SQL
CREATE ROLE pgconn_monitor LOGIN PASSWORD '$(cat "$PASSWORD_FILE")';
GRANT pg_monitor TO pgconn_monitor;
SQL

# Placeholders are replaced outside comments only, so the template's own explanation stays readable.
sed -e "/^[[:space:]]*#/!s|@PGPORT@|$PORT|g" -e "/^[[:space:]]*#/!s|@SOCKET_DIR@|$SOCKET_DIR|g" \
    -e "/^[[:space:]]*#/!s|@PASSWORD_FILE@|$PASSWORD_FILE|g" "$TEMPLATE" >"$CONFIG"

HTTP_PORT=${LISTEN##*:}
HTTP_HOST=${LISTEN%:*}
HTTP_HOST=${HTTP_HOST#[}
HTTP_HOST=${HTTP_HOST%]}
[[ -z $HTTP_HOST || $HTTP_HOST == 0.0.0.0 || $HTTP_HOST == :: ]] && HTTP_HOST=localhost
[[ $HTTP_HOST == *:* ]] && HTTP_HOST="[$HTTP_HOST]"
URL="http://$HTTP_HOST:$HTTP_PORT"
cat >&2 <<EOF

  PostgreSQL  127.0.0.1:$PORT, socket $SOCKET_DIR, role pgconn_monitor (password in $PASSWORD_FILE)
  config      $CONFIG
  exporter    $BIN --web.listen-address=$LISTEN

  Try:
    curl -s $URL/metrics | grep '^pgconn_'
    curl -fsS $URL/-/ready
    curl -s $URL/
  Break the session and watch it recover:
    ${AS_PG[*]} $PG_BIN/psql -h $SOCKET_DIR -p $PORT -U postgres -c \\
      "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'pgconn_monitor'"

  Ctrl-C stops the exporter and the server and removes $WORK.

EOF

# Started with & and waited for, so a signal to this script interrupts `wait` at once and the EXIT trap
# stops the exporter (SIGTERM: it drains and exits), then the server. The terminal stays attached to it.
"$BIN" --config.file="$CONFIG" --web.listen-address="$LISTEN" "$@" &
EXPORTER_PID=$!
wait "$EXPORTER_PID"

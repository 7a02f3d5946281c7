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
# shellcheck source=lib-postgres.sh
source "$ROOT/scripts/lib-postgres.sh"

say() { printf 'run-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

pg_find_bin
[[ -x $BIN ]] || die "$BIN is missing (run: make build)"
[[ -r $TEMPLATE ]] || die "cannot read the config template $TEMPLATE"

pg_run_as_postgres

pg_make_workdir local
PASSWORD_FILE=$WORK/pgconn_monitor.password
CONFIG=$WORK/pgconn_exporter.yml
EXPORTER_PID=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $EXPORTER_PID ]] && kill -0 "$EXPORTER_PID" 2>/dev/null; then
        kill -TERM "$EXPORTER_PID" 2>/dev/null || true
        wait "$EXPORTER_PID" 2>/dev/null || true
    fi
    pg_shutdown
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

pg_initdb

PORT=$(pg_free_port)
say "starting PostgreSQL on 127.0.0.1:$PORT (log: $SERVER_LOG)"
# Its own session, so Ctrl-C reaches the exporter only and the server is stopped afterwards, in order.
pg_start_server

# The monitoring role; its password is written to $PASSWORD_FILE, never put on a command line.
pg_create_login_role pgconn_monitor "$PASSWORD_FILE"

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
    curl -fsS $URL/health
    curl -s $URL/
    curl -s "$URL/probe?target=local"
    curl -s "$URL/probe?target=127.0.0.1:$PORT&module=local_tcp&debug=true"
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

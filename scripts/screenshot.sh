#!/usr/bin/env bash
# Renders the status page with three targets in different states in headless Chromium: docs/status-page.png.
#
# A throwaway PostgreSQL on a free 127.0.0.1 port; targets `primary` (up), `app` (its session up, its login
# checks refused after the role's password changed) and `replica` (nothing listens: refused). One session is
# terminated first, so the timeline shows a short outage. Everything started here is stopped by PID at the end.
#
# Environment: PGCONN_BIN (the exporter binary), SCREENSHOT (output, default docs/status-page.png).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PGCONN_BIN:-$ROOT/.build/release/pgconn_exporter}
OUT=${SCREENSHOT:-$ROOT/docs/status-page.png}
# shellcheck source=lib-postgres.sh
source "$ROOT/scripts/lib-postgres.sh"
say() { printf 'screenshot: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v chromium >/dev/null || die "chromium is missing (run: make deps-test)"
[[ -x $BIN ]] || die "$BIN is missing (run: make build)"
pg_find_bin
pg_run_as_postgres
pg_make_workdir screenshot
EXPORTER_PID=
cleanup() {
    if [[ -n $EXPORTER_PID ]]; then kill -TERM "$EXPORTER_PID" 2>/dev/null || true; wait "$EXPORTER_PID" 2>/dev/null || true; fi
    pg_shutdown
    rm -rf "$WORK"
}
trap cleanup EXIT
pg_initdb
PORT=$(pg_free_port)
pg_start_server
pg_create_login_role pgconn_monitor "$WORK/password"
chmod 644 "$WORK/password"
pg_psql -c "CREATE ROLE app LOGIN PASSWORD 'first'" >/dev/null
printf 'first\n' >"$WORK/app.password"
chmod 644 "$WORK/app.password"

cat >"$WORK/config.yml" <<YAML
defaults: {probe_interval: 500ms, login_interval: 1s, backoff: {initial: 100ms, max: 1s}}
targets:
  - {name: primary, dsn: 'host=127.0.0.1 port=$PORT user=pgconn_monitor dbname=postgres', password_file: $WORK/password}
  - {name: app, dsn: 'host=127.0.0.1 port=$PORT user=app dbname=postgres', password_file: $WORK/app.password}
  - {name: replica, dsn: 'host=127.0.0.1 port=$(pg_free_port) user=pgconn_monitor dbname=postgres'}
YAML
LISTEN_PORT=$(pg_free_port)
"$BIN" --config.file="$WORK/config.yml" --web.listen-address="127.0.0.1:$LISTEN_PORT" 2>"$WORK/exporter.log" &
EXPORTER_PID=$!
URL=http://127.0.0.1:$LISTEN_PORT
for _ in $(seq 200); do curl -sf "$URL/-/ready" >/dev/null && break; sleep 0.05; done
curl -sf "$URL/-/ready" >/dev/null || die "the exporter did not get ready"
pg_psql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pgconn_monitor'" >/dev/null
pg_psql -c "ALTER ROLE app PASSWORD 'second'" >/dev/null
for _ in $(seq 100); do curl -s "$URL/health/app?format=json" | grep -q '"login_up":false' && break; sleep 0.1; done
sleep 1
timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,300 \
    --screenshot="$OUT" "$URL/" 2>/dev/null
say "wrote $OUT"

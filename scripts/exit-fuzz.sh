#!/usr/bin/env bash
# Stops the AddressSanitizer build of the exporter with SIGTERM at random moments while work is in flight, and
# fails if any exit is not status 0 or leaves a sanitizer report (`make sanitize-exit`; docs/reliability.md,
# "Sanitizers"). Against a throwaway PostgreSQL: SCRAM logins every 150 ms, a probe slower than its timeout, a
# black hole, a refused port, a name that does not resolve, a wrong password; scrapes, on-demand probes, SIGHUPs
# and config edits while it runs.
#
# Environment: EXIT_FUZZ_RUNS (default 40), EXIT_FUZZ_SEED (default 1), PGCONN_ASAN_BIN (default
# .build-asan/debug/pgconn_exporter), PGCONN_PG_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PGCONN_ASAN_BIN:-$ROOT/.build-asan/debug/pgconn_exporter}
RUNS=${EXIT_FUZZ_RUNS:-40}
RANDOM=${EXIT_FUZZ_SEED:-1}
# shellcheck source=lib-postgres.sh
source "$ROOT/scripts/lib-postgres.sh"

say() { printf 'exit-fuzz: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -x $BIN ]] || die "$BIN is missing (make sanitize-exit builds it)"
pg_find_bin
pg_run_as_postgres
pg_make_workdir exit-fuzz
REPORTS=$WORK/reports
HOLE_PID=
EXPORTER_PID=
cleanup() {
    local status=$?
    [[ -n $EXPORTER_PID ]] && kill -KILL "$EXPORTER_PID" 2>/dev/null
    [[ -n $HOLE_PID ]] && kill "$HOLE_PID" 2>/dev/null
    pg_shutdown
    if ((status != 0)) && compgen -G "$REPORTS/*" >/dev/null; then
        mkdir -p "$ROOT/.build-asan/exit-fuzz" && cp "$REPORTS"/* "$ROOT/.build-asan/exit-fuzz/"
        say "reports kept in .build-asan/exit-fuzz"
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

pg_initdb
PORT=$(pg_free_port)
pg_start_server
PASSWORD_FILE=$WORK/password
pg_create_login_role fuzz "$PASSWORD_FILE"
mkdir -p "$REPORTS"

# A black hole: connections are accepted by the kernel (the backlog), never answered.
HOLE=$(pg_free_port)
python3 -c "import socket, time
s = socket.socket(); s.bind(('127.0.0.1', $HOLE)); s.listen(4096); time.sleep(3600)" &
HOLE_PID=$!
REFUSED=$(pg_free_port)
CONFIG=$WORK/config.yml
cat >"$CONFIG" <<YAML
defaults:
  probe_interval: 100ms
  probe_timeout: 80ms
  connect_timeout: 300ms
  login_interval: 150ms
  backoff: {initial: 20ms, max: 100ms, multiplier: 2, jitter: 0.2}
targets:
  - {name: scram, dsn: "postgresql://fuzz@127.0.0.1:$PORT/postgres?sslmode=disable", password_file: "$PASSWORD_FILE"}
  - name: slow
    dsn: postgresql://fuzz@127.0.0.1:$PORT/postgres?sslmode=disable
    password_file: "$PASSWORD_FILE"
    query: SELECT pg_sleep(0.09)
  - {name: socket, dsn: "host=$SOCKET_DIR port=$PORT dbname=postgres user=fuzz"}
  - {name: hole, dsn: "host=127.0.0.1 port=$HOLE dbname=postgres user=fuzz"}
  - {name: refused, dsn: "host=127.0.0.1 port=$REFUSED dbname=postgres user=fuzz"}
  - {name: nodns, dsn: "host=nonexistent.invalid dbname=postgres user=fuzz"}
  - {name: wrong, dsn: "postgresql://fuzz:wrong@127.0.0.1:$PORT/postgres?sslmode=disable"}
modules:
  m: {user: fuzz, database: postgres, password_file: "$PASSWORD_FILE", sslmode: disable, timeout: 1s, allow: [127.0.0.1]}
YAML

microseconds() { echo $((${EPOCHREALTIME/./})); }
failed=0
for run in $(seq 1 "$RUNS"); do
    http=$(pg_free_port)
    ASAN_OPTIONS="log_path=$REPORTS/asan.$run log_exe_name=1" \
        LSAN_OPTIONS="suppressions=$ROOT/Tests/Sanitizers/lsan.supp print_suppressions=0" \
        "$BIN" --config.file="$CONFIG" --web.listen-address="127.0.0.1:$http" --config.auto-reload-interval=100ms \
        2>"$WORK/stderr" &
    EXPORTER_PID=$!
    for _ in $(seq 500); do curl -fs -o /dev/null "http://127.0.0.1:$http/-/healthy" && break; sleep 0.01; done
    # 50 ms to 1.5 s of requests, SIGHUPs and config edits, then SIGTERM.
    end=$(($(microseconds) + 50000 + (RANDOM * 32768 + RANDOM) % 1450000))
    clients=()
    while (($(microseconds) < end)); do
        for path in /metrics "/probe?target=scram" "/probe?target=127.0.0.1:$PORT&module=m" \
            "/probe?target=127.0.0.1:$HOLE&module=m"; do
            curl -s -m 2 -o /dev/null "http://127.0.0.1:$http$path" &
            clients+=($!)
        done
        ((RANDOM % 4 == 0)) && kill -HUP "$EXPORTER_PID"
        ((RANDOM % 3 == 0)) && touch "$CONFIG"
        sleep "0.0$((RANDOM % 9 + 1))"
    done
    kill -TERM "$EXPORTER_PID"
    status=0
    wait "$EXPORTER_PID" || status=$?
    EXPORTER_PID=
    for client in "${clients[@]}"; do wait "$client" 2>/dev/null || true; done
    reports=$(grep -lE 'ERROR: |WARNING: ' "$REPORTS"/asan."$run".* 2>/dev/null || true)
    if ((status != 0)) || [[ -n $reports ]]; then
        failed=$((failed + 1))
        say "run $run: exit status $status${reports:+, reports: $(basename -a $reports | tr '\n' ' ')}"
        grep -m1 -h '^SUMMARY: ' $reports 2>/dev/null | sed 's/^/exit-fuzz:   /' >&2 || true
    fi
done
say "$RUNS exits, $((RUNS - failed)) clean (status 0, no sanitizer report), $failed not"
((failed == 0))

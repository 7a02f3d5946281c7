#!/usr/bin/env bash
# `make bench`: measures pgconn_exporter against one throwaway PostgreSQL and compares it with postgres_exporter.
#
# 1. Starts a PostgreSQL on a free 127.0.0.1 port (as the postgres OS user when run as root, like run-local.sh).
# 2. Runs pgconn_exporter with BENCH_TARGETS targets (all the same server, names t001..), probe_interval 1s,
#    login_interval 10s; waits for /-/ready; lets it run BENCH_SECONDS; then measures RSS, CPU, series counts,
#    /metrics latency, the time to notice pg_terminate_backend, and the time to recover after an immediate
#    shutdown (SIGQUIT to the postmaster) and restart.
# 3. Runs postgres_exporter against the same server: RSS, series, /metrics latency; then changes the password of
#    the role both exporters use and watches postgres_exporter's pg_up and pgconn_exporter's pgconn_login_up.
# 4. Prints a table and records it in docs/benchmarks.md (one block per target count, replaced on each run).
# Every wait has a deadline; every process started here is stopped by PID on exit, and the temp dir removed.
#
# Environment:
#   BENCH_TARGETS    targets for pgconn_exporter (default 10)
#   BENCH_SECONDS    steady-state window before measuring (default 30)
#   BENCH_SCRAPES    sequential GETs of /metrics for the latency percentiles (default 200)
#   BENCH_WRK_SECONDS  how long wrk (-t2 -c10) hammers each exporter's /metrics for throughput (default 5)
#   BENCH_DOC        the results file (default docs/benchmarks.md; empty: do not write it)
#   PGCONN_BIN       the exporter binary (default .build/release/pgconn_exporter)
#   POSTGRES_EXPORTER_BIN  (default /usr/bin/prometheus-postgres-exporter)
#   PGCONN_PG_BIN    PostgreSQL's bin dir (default: the newest /usr/lib/postgresql/*/bin)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGETS=${BENCH_TARGETS:-10}
DURATION=${BENCH_SECONDS:-30}
SCRAPES=${BENCH_SCRAPES:-200}
DOC=${BENCH_DOC-$ROOT/docs/benchmarks.md}
BIN=${PGCONN_BIN:-$ROOT/.build/release/pgconn_exporter}
PGE_BIN=${POSTGRES_EXPORTER_BIN:-/usr/bin/prometheus-postgres-exporter}
PROBE_INTERVAL=1s
LOGIN_INTERVAL_SECONDS=10
# shellcheck source=lib-postgres.sh
source "$ROOT/scripts/lib-postgres.sh"
# shellcheck source=lib-bench.sh
source "$ROOT/scripts/lib-bench.sh"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ $TARGETS =~ ^[1-9][0-9]*$ ]] && ((TARGETS <= 1000)) || die "BENCH_TARGETS must be 1 to 1000 (got $TARGETS)"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive number of seconds (got $DURATION)"
[[ $SCRAPES =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCRAPES must be a positive number (got $SCRAPES)"
pg_find_bin
[[ -x $BIN ]] || die "$BIN is missing (run: make build)"
[[ -x $PGE_BIN ]] || die "$PGE_BIN is missing (run: make deps)"
command -v python3 >/dev/null || die "python3 is needed for the measurements"
command -v curl >/dev/null || die "curl is needed (run: make deps)"

pg_run_as_postgres

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
pg_make_workdir bench
PASSWORD_FILE=$WORK/bench_monitor.password
CONFIG=$WORK/pgconn_exporter.yml
PGCONN_LOG=$WORK/pgconn_exporter.log
PGE_LOG=$WORK/postgres_exporter.log
MEASURE=$WORK/measure.py
PGCONN_PID=
PGE_PID=
RECOVERY_PID=

# ---------------------------------------------------------------------------------------------------------------
# Process lifecycle (the server: scripts/lib-postgres.sh; the exporters: foreground children stopped by PID with
# stop_pid from scripts/lib-bench.sh, which also has sql and require_alive).

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -n $RECOVERY_PID ]] && stop_pid "$RECOVERY_PID" "the recovery timer"
    [[ -n $PGE_PID ]] && stop_pid "$PGE_PID" postgres_exporter
    [[ -n $PGCONN_PID ]] && stop_pid "$PGCONN_PID" pgconn_exporter
    pg_shutdown
    bench_cleanup_end "$status" "$SERVER_LOG" "$PGCONN_LOG" "$PGE_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts the postmaster on $PORT with room for every target's session and login check (see pg_start_server).
start_server() { pg_start_server -c max_connections="$MAX_CONNECTIONS"; }

# ---------------------------------------------------------------------------------------------------------------
# Measurements: python3, stdlib only. Each subcommand prints space-separated numbers for `read`.

cat >"$MEASURE" <<'PY'
"""Measurement subcommands for scripts/bench.sh (see each function's docstring)."""
import http.client
import math
import os
import subprocess
import sys
import time
import urllib.parse


def get(url, timeout=5.0):
    """One GET on a new connection, like a Prometheus scrape: (status, body bytes)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def samples(url):
    """The samples of a /metrics page as (name, labels, value); labels is the raw `{...}` text."""
    status, body = get(url)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}")
    out = []
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, brace, labels = series.partition("{")
        out.append((name, brace + labels, float(value)))
    return out


def aggregate(url, agg, name):
    """sum, min, max or count of the samples named `name`; nan when there are none.

    Only the lines of `name` are parsed, so that a 10 ms poll of a large page stays cheap.
    """
    status, body = get(url)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}")
    return aggregate_text(body.decode(), agg, name)


def aggregate_text(text, agg, name):
    """`aggregate` on a page already fetched."""
    values = [
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    ]
    if agg == "count":
        return len(values)
    if not values:
        return math.nan
    return {"sum": sum, "min": min, "max": max}[agg](values)


def percentile(sorted_values, p):
    """Nearest-rank percentile."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def cmd_scrape(url, count):
    """`count` sequential GETs: p50, p99 and max latency in ms, and the body size in bytes."""
    latencies, size = [], 0
    for _ in range(int(count)):
        start = time.perf_counter()
        status, body = get(url)
        latencies.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise RuntimeError(f"{url}: HTTP {status}")
        size = len(body)
    latencies.sort()
    print(f"{percentile(latencies, 50):.2f} {percentile(latencies, 99):.2f} {latencies[-1]:.2f} {size}")


def cmd_series(url, label="target"):
    """Series in total, series carrying `label`, distinct values of it, and the most series for one value."""
    per_value = {}
    everything = samples(url)
    key = f'{label}="'
    for _, labels, _ in everything:
        start = labels.find(key)
        if start >= 0:
            start += len(key)
            value = labels[start:labels.index('"', start)]
            per_value[value] = per_value.get(value, 0) + 1
    labelled = sum(per_value.values())
    print(len(everything), labelled, len(per_value), max(per_value.values(), default=0))


def cmd_value(url, agg, name):
    """One aggregate of one metric."""
    print(f"{aggregate(url, agg, name):g}")


def cmd_label(url, name, label):
    """The value of `label` on the first sample of `name` (empty when missing)."""
    key = f'{label}="'
    for n, labels, _ in samples(url):
        if n == name and key in labels:
            start = labels.index(key) + len(key)
            print(labels[start:labels.index('"', start)])
            return
    print("")


def cmd_first_success(url, start):
    """Milliseconds from `start` (Unix time, taken just before the exporter was started) to the first and to the
    last target's first successful probe, and how many targets had one: pgconn_last_success_timestamp_seconds,
    read right after /-/ready, before a second probe (1 s later) can move it."""
    status, body = get(url)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}")
    name = "pgconn_last_success_timestamp_seconds"
    stamps = [
        float(line.rpartition(" ")[2])
        for line in body.decode().splitlines()
        if line.startswith(name + "{")
    ]
    stamps = [s for s in stamps if s > 0]
    if not stamps:
        print("nan nan 0")
        return
    print(f"{(min(stamps) - float(start)) * 1000:.0f} {(max(stamps) - float(start)) * 1000:.0f} {len(stamps)}")


def cmd_lag(url):
    """From the histogram pgconn_exporter_loop_lag_seconds (how late the I/O thread's timers fire, so how
    saturated it is): timers fired, those later than 10 ms and than 100 ms, the mean lag in ms, the sum in s.
    """
    buckets, total, count = {}, 0.0, 0
    for name, labels, value in samples(url):
        if name == "pgconn_exporter_loop_lag_seconds_bucket":
            buckets[labels.split('le="')[1].split('"')[0]] = value
        elif name == "pgconn_exporter_loop_lag_seconds_sum":
            total = value
        elif name == "pgconn_exporter_loop_lag_seconds_count":
            count = int(value)
    late_10 = count - int(buckets.get("0.01", count))
    late_100 = count - int(buckets.get("0.1", count))
    print(count, late_10, late_100, f"{1000 * total / count if count else 0:.3f}", total)


def cmd_proc(pid):
    """VmRSS in bytes and user+system CPU seconds of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    print(rss_kb * 1024, f"{ticks / os.sysconf('SC_CLK_TCK'):.2f}")


def cmd_wait(url, timeout, *args):
    """wait URL TIMEOUT CONDITION... [-- COMMAND...]: runs COMMAND, then polls every 10 ms until every CONDITION
    ("sum pgconn_up >= 10": an aggregate, a metric, one of >= <= ==, a number) has held once.

    The clock starts when the command has returned, so the start-up of this script (a python3 start takes
    0.1 to 0.2 s on a busy machine) is never counted. Prints the command's own seconds, the polls made, then
    for each condition the seconds until it first held, or "timeout" (and then exits 2).
    """
    split = args.index("--") if "--" in args else len(args)
    conditions, command = [c.split() for c in args[:split]], args[split + 1 :]
    compare = {">=": float.__ge__, "<=": float.__le__, "==": float.__eq__}
    command_seconds = 0.0
    if command:
        start = time.monotonic()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        command_seconds = time.monotonic() - start
    origin = time.monotonic()
    deadline = origin + float(timeout)
    reached = [None] * len(conditions)
    polls = 0
    while None in reached and time.monotonic() < deadline:
        polls += 1
        try:
            status, body = get(url)
            text = body.decode() if status == 200 else ""
        except OSError:
            text = ""  # a refused or failed poll is a missed poll, not a failure
        if text:
            now = time.monotonic()
            for i, (agg, name, op, threshold) in enumerate(conditions):
                if reached[i] is None and compare[op](float(aggregate_text(text, agg, name)), float(threshold)):
                    reached[i] = f"{now - origin:.3f}"
        if None in reached:
            time.sleep(0.01)
    print(f"{command_seconds:.3f} {polls}", *(r or "timeout" for r in reached))
    if None in reached:
        sys.exit(2)


def cmd_recovery(url, count, timeout, marker, *ready_command):
    """Times a server restart as the exporter sees it; started before the server is stopped.

    Creates `marker` once running; runs `ready_command` (pg_isready) every 10 ms until it fails (the server
    went down) and then until it succeeds (accepting again: the clock starts); then polls until
    sum(pgconn_up) >= count. Prints the seconds from accepting to all up and the polls, or "timeout".
    """
    deadline = time.monotonic() + float(timeout)
    open(marker, "w").close()

    def ready():
        return subprocess.run(ready_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    for want in (False, True):
        while ready() != want:
            if time.monotonic() > deadline:
                print("timeout 0")
                sys.exit(2)
            time.sleep(0.01)
    origin, polls = time.monotonic(), 0
    while time.monotonic() < deadline:
        polls += 1
        try:
            if aggregate(url, "sum", "pgconn_up") >= float(count):
                print(f"{time.monotonic() - origin:.3f} {polls}")
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(0.01)
    print(f"timeout {polls}")
    sys.exit(2)


def cmd_watch(url, agg, name, min_seconds, max_seconds, other_url, other_agg, other_name, *command):
    """Runs `command` (after "--"), then samples `agg(name)` at `url` every 0.5 s for at least `min_seconds`, and
    on until `other_agg(other_name)` at `other_url` reads 0 or `max_seconds` pass. Prints the min and max seen
    at `url`, the samples, and the seconds from the command's end until the other read 0 (or "timeout").
    """
    if command:
        subprocess.run(command[1:] if command[0] == "--" else command, check=True, stdout=subprocess.DEVNULL)
    start = time.monotonic()
    seen, reached = [], "timeout"
    while time.monotonic() - start < float(max_seconds):
        seen.append(float(aggregate(url, agg, name)))
        if reached == "timeout" and float(aggregate(other_url, other_agg, other_name)) == 0:
            reached = f"{time.monotonic() - start:.1f}"
        if reached != "timeout" and time.monotonic() - start >= float(min_seconds):
            break
        time.sleep(0.5)
    print(f"{min(seen):g} {max(seen):g} {len(seen)} {reached}")


if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
measure() { python3 "$MEASURE" "$@"; }

# wrk_run URL: /metrics throughput with 10 connections on 2 threads, as "<requests/s> <p99 ms>".
WRK_SECONDS=${BENCH_WRK_SECONDS:-5}
wrk_run() {
    command -v wrk >/dev/null || { echo "- -"; return; }
    wrk -t2 -c10 -d"${WRK_SECONDS}s" --latency "$1" | awk '
        /Requests\/sec:/ { rps = $2 }
        $1 == "99%" { v = $2; unit = v; gsub(/[0-9.]/, "", unit); sub(/[a-z]+$/, "", v)
                      p99 = (unit == "us" ? v / 1000 : (unit == "s" ? v * 1000 : v)) }
        END { printf "%.0f %.2f\n", rps, p99 }'
}

# ---------------------------------------------------------------------------------------------------------------
# 1. PostgreSQL

MAX_CONNECTIONS=$((TARGETS * 2 + 50 > 200 ? TARGETS * 2 + 50 : 200))
pg_initdb
PORT=$(pg_free_port)
say "starting PostgreSQL on 127.0.0.1:$PORT, max_connections=$MAX_CONNECTIONS"
start_server

# One role for both exporters; its password is written to $PASSWORD_FILE, never put on a command line.
pg_create_login_role bench_monitor "$PASSWORD_FILE"

# ---------------------------------------------------------------------------------------------------------------
# 2. pgconn_exporter with N targets

{
    echo "defaults:"
    echo "  probe_interval: $PROBE_INTERVAL"
    echo "  probe_timeout: 500ms"
    echo "  connect_timeout: 5s"
    echo "  login_interval: ${LOGIN_INTERVAL_SECONDS}s"
    echo "targets:"
    dsn="postgresql://bench_monitor@127.0.0.1:$PORT/postgres?sslmode=disable&application_name=pgconn_exporter"
    for ((i = 1; i <= TARGETS; i++)); do
        printf '  - name: t%03d\n' "$i"
        echo "    dsn: $dsn"
        echo "    password_file: $PASSWORD_FILE"
    done
} >"$CONFIG"

PGCONN_PORT=$(pg_free_port)
PGCONN_URL=http://127.0.0.1:$PGCONN_PORT
say "starting pgconn_exporter ($TARGETS targets) on 127.0.0.1:$PGCONN_PORT"
started=$(date +%s.%N)
"$BIN" --config.file="$CONFIG" --web.listen-address="127.0.0.1:$PGCONN_PORT" --log.level=warn \
    >"$PGCONN_LOG" 2>&1 </dev/null &
PGCONN_PID=$!
ready=
for _ in $(seq 3000); do
    if curl -fsS -o /dev/null --max-time 1 "$PGCONN_URL/-/ready" 2>/dev/null; then ready=$(date +%s.%N); break; fi
    require_alive "startup"
    sleep 0.02
done
[[ -n $ready ]] || die "pgconn_exporter was not ready within 60s"
PGCONN_READY_S=$(awk -v a="$started" -v b="$ready" 'BEGIN { printf "%.2f", b - a }')
read -r FIRST_PROBE_MS ALL_FIRST_PROBE_MS FIRST_PROBED < <(measure first_success "$PGCONN_URL/metrics" "$started")
read -r _ cpu_ready < <(measure proc "$PGCONN_PID")
failures_ready=$(measure value "$PGCONN_URL/metrics" sum pgconn_probe_failures_total)
read -r lag_count_ready lag_10_ready lag_100_ready _ lag_sum_ready < <(measure lag "$PGCONN_URL/metrics")
say "ready after ${PGCONN_READY_S}s; steady state for ${DURATION}s"
sleep "$DURATION" # the measured window itself, not a wait for a condition
require_alive "the steady-state window"
read -r PGCONN_RSS cpu_window_end < <(measure proc "$PGCONN_PID")
PGCONN_CPU_WINDOW=$(awk -v a="$cpu_ready" -v b="$cpu_window_end" 'BEGIN { printf "%.2f", b - a }')
PGCONN_CPU_PCT=$(awk -v c="$PGCONN_CPU_WINDOW" -v d="$DURATION" 'BEGIN { printf "%.2f", 100 * c / d }')
PROBE_FAILURES_WINDOW=$(awk -v a="$failures_ready" -v b="$(measure value "$PGCONN_URL/metrics" sum \
    pgconn_probe_failures_total)" 'BEGIN { print b - a }')
PGCONN_RSS_METRIC=$(measure value "$PGCONN_URL/metrics" max process_resident_memory_bytes)
read -r LAG_COUNT LAG_OVER_10MS LAG_OVER_100MS LAG_MEAN_MS lag_sum < <(measure lag "$PGCONN_URL/metrics")
LAG_WINDOW_COUNT=$((LAG_COUNT - lag_count_ready))
LAG_WINDOW_MEAN_MS=$(awk -v s="$lag_sum" -v r="$lag_sum_ready" -v n="$LAG_WINDOW_COUNT" \
    'BEGIN { printf "%.3f", (n > 0 ? 1000 * (s - r) / n : 0) }')
read -r PGCONN_SERIES PGCONN_TARGET_SERIES PGCONN_SEEN_TARGETS PGCONN_PER_TARGET \
    < <(measure series "$PGCONN_URL/metrics" target)
PGCONN_UP=$(measure value "$PGCONN_URL/metrics" sum pgconn_up)
PGCONN_BUILD=$(measure label "$PGCONN_URL/metrics" pgconn_exporter_build_info version)
LIBPQ_VERSION=$(measure label "$PGCONN_URL/metrics" pgconn_exporter_build_info libpq_version)
MHD_VERSION=$(measure label "$PGCONN_URL/metrics" pgconn_exporter_build_info microhttpd_version)
SESSIONS=$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
say "$PGCONN_UP of $TARGETS targets up, $SESSIONS sessions; $PGCONN_SERIES series; scraping $SCRAPES times"

read -r PGCONN_P50 PGCONN_P99 PGCONN_MAX PGCONN_BYTES < <(measure scrape "$PGCONN_URL/metrics" "$SCRAPES")
require_alive "the scrape latency run"
say "wrk on pgconn_exporter's /metrics for ${WRK_SECONDS}s"
read -r PGCONN_RPS PGCONN_WRK_P99 < <(wrk_run "$PGCONN_URL/metrics")
require_alive "the wrk run"
read -r PGCONN_RSS_AFTER_SCRAPES _ < <(measure proc "$PGCONN_PID")

# Terminated backends: the clock starts when the terminating statement has returned.
say "pg_terminate_backend on every session"
baseline=$(measure value "$PGCONN_URL/metrics" sum pgconn_disconnects_total)
read -r TERMINATE_PSQL_S TERMINATE_POLLS TERMINATE_S ALL_UP_AFTER_TERMINATE_S < <(
    measure wait "$PGCONN_URL/metrics" 30 \
        "sum pgconn_disconnects_total >= $((${baseline%.*} + TARGETS))" "sum pgconn_up >= $TARGETS" -- \
        "${AS_PG[@]}" "$PG_BIN/psql" -X -q -At -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres -c \
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'"
) || true
require_alive "pg_terminate_backend"
[[ -n ${TERMINATE_S:-} ]] || TERMINATE_S=failed

# Immediate shutdown (what `pg_ctl stop -m immediate` sends) and a start on the same port. The recovery timer
# runs before the server stops, so it sees the moment the server accepts again (not its own start-up).
say "immediate shutdown (SIGQUIT to the postmaster) and restart"
measure recovery "$PGCONN_URL/metrics" "$TARGETS" 90 "$WORK/recovery.started" \
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" >"$WORK/recovery.out" &
RECOVERY_PID=$!
for _ in $(seq 1000); do [[ -e $WORK/recovery.started ]] && break; sleep 0.01; done
read -r _ DOWN_POLLS DOWN_S < <(measure wait "$PGCONN_URL/metrics" 10 "max pgconn_up == 0" -- \
    kill -QUIT "$POSTMASTER_PID") || true
[[ -n ${DOWN_S:-} ]] || DOWN_S=failed
for _ in $(seq 1000); do kill -0 "$POSTMASTER_PID" 2>/dev/null || break; sleep 0.01; done
kill -0 "$POSTMASTER_PID" 2>/dev/null && die "the postmaster did not exit within 10s of SIGQUIT"
start_server
wait "$RECOVERY_PID" || true
RECOVERY_PID=
read -r RECOVER_S RECOVER_POLLS <"$WORK/recovery.out" || RECOVER_S=failed
require_alive "the restart"
PG_VERSION=$(sql "SHOW server_version")

# ---------------------------------------------------------------------------------------------------------------
# 3. postgres_exporter against the same server (one database; the DSN holds the password, as it must)

PGE_PORT=$(pg_free_port)
PGE_URL=http://127.0.0.1:$PGE_PORT
PGE_VERSION=$("$PGE_BIN" --version 2>&1 | head -n 1 | awk '{ print $3 }')
say "starting postgres_exporter $PGE_VERSION on 127.0.0.1:$PGE_PORT"
DATA_SOURCE_NAME="postgresql://bench_monitor:$(cat "$PASSWORD_FILE")@127.0.0.1:$PORT/postgres?sslmode=disable" \
    "$PGE_BIN" --web.listen-address="127.0.0.1:$PGE_PORT" --log.level=warn >"$PGE_LOG" 2>&1 </dev/null &
PGE_PID=$!
pge_ready=
for _ in $(seq 300); do
    if [[ $(measure value "$PGE_URL/metrics" max pg_up 2>/dev/null) == 1 ]]; then pge_ready=1; break; fi
    kill -0 "$PGE_PID" 2>/dev/null || die "postgres_exporter exited during startup"
    sleep 0.1
done
[[ -n $pge_ready ]] || die "postgres_exporter did not report pg_up 1 within 30s"
read -r PGE_SERIES _ < <(measure series "$PGE_URL/metrics" target)
say "postgres_exporter: $PGE_SERIES series; scraping $SCRAPES times"
read -r PGE_P50 PGE_P99 PGE_MAX PGE_BYTES < <(measure scrape "$PGE_URL/metrics" "$SCRAPES")
say "wrk on postgres_exporter's /metrics for ${WRK_SECONDS}s"
read -r PGE_RPS PGE_WRK_P99 < <(wrk_run "$PGE_URL/metrics")
read -r PGE_RSS PGE_CPU < <(measure proc "$PGE_PID")

# New logins refused, old connections alive: only a fresh login can tell. First every login check must have
# succeeded since the restart (a check that failed during it would read 0 before the change).
say "waiting for every pgconn_login_up 1, then ALTER ROLE bench_monitor PASSWORD"
measure wait "$PGCONN_URL/metrics" $((2 * LOGIN_INTERVAL_SECONDS + 5)) "min pgconn_login_up == 1" >/dev/null ||
    die "pgconn_login_up was not 1 on every target within $((2 * LOGIN_INTERVAL_SECONDS + 5))s before the change"
# Then, from the change on, scrape postgres_exporter (pg_up) for a login interval at least, and until every
# pgconn_login_up reads 0.
read -r PGE_UP_MIN PGE_UP_MAX PGE_UP_SAMPLES LOGIN_DOWN_S < <(
    measure watch "$PGE_URL/metrics" min pg_up "$LOGIN_INTERVAL_SECONDS" $((2 * LOGIN_INTERVAL_SECONDS + 5)) \
        "$PGCONN_URL/metrics" max pgconn_login_up -- "${AS_PG[@]}" "$PG_BIN/psql" -X -q -At -h "$SOCKET_DIR" \
        -p "$PORT" -U postgres -d postgres -c "ALTER ROLE bench_monitor PASSWORD 'changed-by-bench-$RANDOM$RANDOM'"
)
require_alive "the revoke test"
if PGPASSFILE=/dev/null PGPASSWORD=$(cat "$PASSWORD_FILE") "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" \
    -U bench_monitor -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    die "a login with the old password still succeeds; the password-change test proved nothing"
fi
PGCONN_LOGIN_UP_SUM=$(measure value "$PGCONN_URL/metrics" sum pgconn_login_up)
PGCONN_UP_AFTER_REVOKE=$(measure value "$PGCONN_URL/metrics" sum pgconn_up)
LOGIN_AUTH_FAILURES=$(sed -n 's/^pgconn_login_failures_total{.*reason="auth".*} \(.*\)$/\1/p' \
    <(curl -fsS --max-time 5 "$PGCONN_URL/metrics") | awk '{ s += $1 } END { print s + 0 }')
read -r PGCONN_RSS_END PGCONN_CPU_END < <(measure proc "$PGCONN_PID")

# ---------------------------------------------------------------------------------------------------------------
# 4. Report

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
pge_up_text() { if [[ $PGE_UP_MIN == 1 ]]; then echo "stayed 1 ($PGE_UP_SAMPLES scrapes)"; else echo "went 0"; fi; }
login_text() {
    if [[ $LOGIN_DOWN_S == timeout ]]; then
        echo "NOT 0 on all within $((2 * LOGIN_INTERVAL_SECONDS + 5))s"
    else
        echo "0 on all after ${LOGIN_DOWN_S}s"
    fi
}
ms() { [[ $1 =~ ^[0-9.]+$ ]] && awk -v s="$1" 'BEGIN { printf "%.0f ms", s * 1000 }' || echo "$1"; }

TABLE=$(
    row() { printf '| %-42s | %-36s | %-30s |\n' "$@"; }
    row "measure" "pgconn_exporter ($TARGETS targets)" "postgres_exporter (1 database)"
    row "" "" "" | tr ' ' -
    row "RSS after the ${DURATION}s window (VmRSS)" "$(mib "$PGCONN_RSS")" "$(mib "$PGE_RSS") (after $SCRAPES scrapes)"
    row "process_resident_memory_bytes" "$(mib "$PGCONN_RSS_METRIC")" "-"
    row "RSS after $SCRAPES scrapes / at the end" "$(mib "$PGCONN_RSS_AFTER_SCRAPES") / $(mib "$PGCONN_RSS_END")" "-"
    row "CPU in the ${DURATION}s window" "${PGCONN_CPU_WINDOW}s (${PGCONN_CPU_PCT}% of a core)" "-"
    row "CPU total at the end (utime+stime)" "${PGCONN_CPU_END}s" "${PGE_CPU}s"
    row "time to /-/ready" "${PGCONN_READY_S}s" "-"
    row "start to first probe success: first / all" "${FIRST_PROBE_MS} ms / ${ALL_FIRST_PROBE_MS} ms (${FIRST_PROBED} of $TARGETS)" "-"
    lag_window="$LAG_WINDOW_MEAN_MS ms / $((LAG_OVER_10MS - lag_10_ready)) / $((LAG_OVER_100MS - lag_100_ready))"
    row "loop lag (window): mean/>10ms/>100ms" "$lag_window of $LAG_WINDOW_COUNT" "-"
    row "loop lag (since start): mean/>10ms/>100ms" \
        "$LAG_MEAN_MS ms / $LAG_OVER_10MS / $LAG_OVER_100MS of $LAG_COUNT" "-"
    row "series in /metrics" "$PGCONN_SERIES" "$PGE_SERIES"
    row "series per target" "$PGCONN_PER_TARGET" "$PGE_SERIES"
    row "/metrics size" "$PGCONN_BYTES bytes" "$PGE_BYTES bytes"
    row "/metrics latency p50 / p99 / max" "$PGCONN_P50 / $PGCONN_P99 / $PGCONN_MAX ms" \
        "$PGE_P50 / $PGE_P99 / $PGE_MAX ms"
    ratio=$(awk -v a="$PGCONN_RPS" -v b="$PGE_RPS" 'BEGIN { if (b > 0) printf " (%.0fx)", a / b }')
    row "/metrics throughput, wrk -t2 -c10 ${WRK_SECONDS}s" "$PGCONN_RPS req/s$ratio, p99 $PGCONN_WRK_P99 ms" \
        "$PGE_RPS req/s, p99 $PGE_WRK_P99 ms"
    row "pg_terminate_backend seen on all sessions" "$(ms "$TERMINATE_S") (psql: $(ms "$TERMINATE_PSQL_S"))" "-"
    row "SIGQUIT to every pgconn_up 0" "$(ms "$DOWN_S")" "-"
    row "restart: accepting again to all up" "$(ms "$RECOVER_S")" "-"
    row "password changed: up metric" "pgconn_up $PGCONN_UP_AFTER_REVOKE/$TARGETS" "pg_up $(pge_up_text)"
    row "password changed: login metric" "pgconn_login_up $(login_text)" "(none)"
)
DATE=$(date -u +'%Y-%m-%d %H:%M UTC')
MACHINE="$(bench_machine); PostgreSQL $PG_VERSION, libpq $LIBPQ_VERSION"
MACHINE+=", libmicrohttpd $MHD_VERSION; pgconn_exporter $PGCONN_BUILD, postgres_exporter $PGE_VERSION"
MACHINE+="; load average (1, 5, 15 min) $LOAD_AT_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
NOTES=$(
    echo "- pgconn_exporter: $TARGETS targets, probe_interval $PROBE_INTERVAL," \
        "login_interval ${LOGIN_INTERVAL_SECONDS}s;" \
        "$PGCONN_SEEN_TARGETS targets and $PGCONN_TARGET_SERIES of its $PGCONN_SERIES series carry \`target\`;" \
        "probe failures in the steady window: $PROBE_FAILURES_WINDOW."
    echo "- pg_terminate_backend: pgconn_disconnects_total grew by $TARGETS within $(ms "$TERMINATE_S") after the" \
        "statement returned (psql itself took $(ms "$TERMINATE_PSQL_S")); every pgconn_up 1 again after" \
        "$(ms "${ALL_UP_AFTER_TERMINATE_S:-timeout}") ($TERMINATE_POLLS polls of /metrics)."
    echo "- Immediate shutdown: every pgconn_up 0 $(ms "$DOWN_S") after SIGQUIT ($DOWN_POLLS polls);" \
        "all 1 again $(ms "$RECOVER_S") after pg_isready first succeeded (${RECOVER_POLLS:-?} polls)."
    echo "- Password changed: postgres_exporter's pg_up min/max $PGE_UP_MIN/$PGE_UP_MAX over $PGE_UP_SAMPLES scrapes;" \
        "pgconn_login_up $(login_text), pgconn_up $PGCONN_UP_AFTER_REVOKE/$TARGETS;" \
        "login failures with reason=\"auth\": $LOGIN_AUTH_FAILURES."
)

echo
echo "pgconn_exporter benchmark, $DATE"
echo "$MACHINE"
echo
echo "$TABLE"
echo
echo "$NOTES"
echo

if [[ -n $DOC ]]; then
    {
        echo "<!-- bench:$TARGETS begin -->"
        echo "### $TARGETS targets ($DATE)"
        echo
        echo "Machine: $MACHINE."
        echo
        echo "$TABLE"
        echo
        echo "$NOTES"
        echo "<!-- bench:$TARGETS end -->"
    } >"$WORK/block.md"
    # Replaces this target count's block, or adds it before the results marker (which stays last).
    bench_record "$DOC" "<!-- bench:$TARGETS begin -->" "<!-- bench:$TARGETS end -->" "<!-- bench:results -->" \
        "$WORK/block.md"
    say "recorded in ${DOC#"$ROOT"/}"
fi

#!/usr/bin/env bash
# `make bench-detect`: how fast pgconn_exporter, postgres_exporter and sql_exporter see a terminated backend, a
# server shutdown, a long outage and a black-holed host, and how fast pgconn_exporter is back afterwards. The
# whole run (server, proxy, exporters, faults, clocks) is scripts/bench_detect.py, in one process so that every
# fault and every observation is stamped on one monotonic clock; see its docstring for each step.
#
# Environment:
#   BENCH_DETECT_RUNS         runs of each fault (default 20)
#   BENCH_DETECT_LONG_RUNS    runs of the long outage (default BENCH_DETECT_RUNS)
#   BENCH_DETECT_OUTAGE       seconds the server stays down in the long outage (default 12, past the 5 s backoff cap)
#   BENCH_DETECT_SHORT_OUTAGE seconds it stays down after each fast shutdown (default 2)
#   BENCH_DOC                 the results file (default docs/benchmarks.md; empty: do not write it)
#   PGCONN_BIN                the exporter binary (default .build/release/pgconn_exporter)
#   POSTGRES_EXPORTER_BIN     (default /usr/bin/prometheus-postgres-exporter)
#   SQL_EXPORTER_BIN          (default /usr/bin/prometheus-sql-exporter)
#   PGCONN_PG_BIN             PostgreSQL's bin dir (default: the newest /usr/lib/postgresql/*/bin)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'bench-detect: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=lib-postgres.sh
source "$ROOT/scripts/lib-postgres.sh"

RUNS=${BENCH_DETECT_RUNS:-20}
LONG_RUNS=${BENCH_DETECT_LONG_RUNS:-$RUNS}
OUTAGE=${BENCH_DETECT_OUTAGE:-12}
SHORT_OUTAGE=${BENCH_DETECT_SHORT_OUTAGE:-2}
DOC=${BENCH_DOC-$ROOT/docs/benchmarks.md}
BIN=${PGCONN_BIN:-$ROOT/.build/release/pgconn_exporter}
PGE_BIN=${POSTGRES_EXPORTER_BIN:-/usr/bin/prometheus-postgres-exporter}
SQLE_BIN=${SQL_EXPORTER_BIN:-/usr/bin/prometheus-sql-exporter}

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_DETECT_RUNS must be a positive whole number (got '$RUNS')"
[[ $LONG_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_DETECT_LONG_RUNS must be a positive whole number (got '$LONG_RUNS')"
[[ $OUTAGE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_DETECT_OUTAGE must be a number of seconds (got '$OUTAGE')"
[[ $SHORT_OUTAGE =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    die "BENCH_DETECT_SHORT_OUTAGE must be a number of seconds (got '$SHORT_OUTAGE')"
pg_find_bin
[[ -x $BIN ]] || die "$BIN is missing (run: make build)"
[[ -x $PGE_BIN ]] || die "$PGE_BIN is missing (run: make deps)"
[[ -x $SQLE_BIN ]] || die "$SQLE_BIN is missing (make bench-detect installs prometheus-sql-exporter)"
command -v python3 >/dev/null || die "python3 is needed"
if [[ $(id -u) == 0 ]]; then id postgres >/dev/null 2>&1 || die "running as root needs the postgres OS user"; fi

exec python3 "$ROOT/scripts/bench_detect.py" --pgconn "$BIN" --pge "$PGE_BIN" --sqle "$SQLE_BIN" --pg-bin "$PG_BIN" \
    --runs "$RUNS" --long-runs "$LONG_RUNS" --long-outage "$OUTAGE" --short-outage "$SHORT_OUTAGE" --doc "$DOC"

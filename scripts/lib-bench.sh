# shellcheck shell=bash
# Helpers shared by the benchmarks (scripts/bench.sh, scripts/bench-scale.sh, scripts/bench-detect.sh), which source
# this file after scripts/lib-postgres.sh: stopping a process by PID, the end of the EXIT trap, psql as the
# superuser, the check that the exporter still runs, the machine's description and the writer of the result blocks
# in docs/benchmarks.md.
#
# The caller runs with `set -euo pipefail` and defines `say` and `die`. The functions use these globals: WORK
# (pg_make_workdir), PGCONN_PID (the exporter's PID, for require_alive), and what pg_psql needs.

# stop_pid PID NAME [SIGNAL]: SIGNAL (default TERM), up to 10 s, then SIGKILL; reaps the process if it is a child.
stop_pid() {
    local pid=$1 name=$2 signal=${3:-TERM}
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$signal" "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    say "$name (pid $pid) did not stop within 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# bench_cleanup_end STATUS LOG...: the end of an EXIT trap, once every process is stopped. After a failure (not a
# Ctrl-C, 130, or a SIGTERM, 143) it shows the last 15 lines of each non-empty LOG; then it removes $WORK and
# exits with STATUS.
bench_cleanup_end() {
    local status=$1 log
    shift
    if ((status != 0 && status != 130 && status != 143)); then
        for log in "$@"; do
            [[ -s $log ]] || continue
            say "last lines of $(basename "$log"):"
            tail -n 15 "$log" >&2
        done
    fi
    rm -rf "$WORK"
    say "stopped every process started; removed $WORK"
    exit "$status"
}

sql() { pg_psql -At -v ON_ERROR_STOP=1 -c "$1"; } # sql STATEMENT: as the superuser, unaligned output

# require_alive WHAT: fails with the exporter's log if it died: a crash under the benchmark is a result to report,
# not to hide.
require_alive() {
    kill -0 "$PGCONN_PID" 2>/dev/null && return 0
    local status=0
    wait "$PGCONN_PID" || status=$?
    PGCONN_PID=
    die "pgconn_exporter exited (status $status) during: $1"
}

# Prints "<n> CPUs (<model>), <memory> GiB RAM, Linux <release>", the start of every block's "Machine:" line.
bench_machine() {
    local cpu_model mem_total
    cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    mem_total=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "$(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r)"
}

# bench_record DOC BEGIN END RESULTS BLOCK_FILE: puts BLOCK_FILE (which starts with the line BEGIN and ends with
# the line END) into DOC: in place of the text from BEGIN to END when DOC has it, else just before the marker
# RESULTS (which stays, so later blocks go there too), else at the end. A missing DOC is created as a title and
# RESULTS.
bench_record() {
    local doc=$1 begin=$2 end=$3 results=$4 block_file=$5
    [[ -f $doc ]] || printf '# Benchmarks\n\n%s\n' "$results" >"$doc"
    python3 - "$doc" "$begin" "$end" "$results" "$block_file" <<'PY'
import re, sys
path, begin, end, results, block_file = sys.argv[1:]
text, block = open(path).read(), open(block_file).read().rstrip("\n")
pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
elif results in text:
    text = text.replace(results, block + "\n\n" + results)
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
}

#!/usr/bin/env bash
# The test suite under a sanitizer, the exporter binary it starts included:
#   scripts/sanitize.sh address   AddressSanitizer and LeakSanitizer (.build-asan)
#   scripts/sanitize.sh thread    ThreadSanitizer, pthread locks in place of Mutex (-DPGCONN_TSAN, .build-tsan)
# Every process writes its reports to <scratch>/reports (log_path), so a report from an exporter the tests
# started counts as much as one from the test process: the run fails if any report was written, or if a test
# failed. SANITIZE_SKIP: a `swift test --skip` pattern (make test skips the soak, which it runs uninstrumented);
# TEST_FILTER: `--filter`.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
mode=${1:?usage: scripts/sanitize.sh address|thread}
case "$mode" in
    address) scratch=.build-asan flags=(--sanitize=address) ;;
    thread) scratch=.build-tsan flags=(--sanitize=thread -Xswiftc -DPGCONN_TSAN) ;;
    *) echo "sanitize: unknown mode $mode (address or thread)" >&2; exit 2 ;;
esac
reports="$PWD/$scratch/reports"

# A failed build ends the script (pipefail); grep finding nothing to print does not.
"$SWIFT" build --build-tests "${flags[@]}" --scratch-path "$scratch" 2>&1 | { grep -v 'Cannot export local symbol' || true; }
rm -rf "$reports"
mkdir -p "$reports"
arguments=()
[ -n "${TEST_FILTER:-}" ] && arguments+=(--filter "$TEST_FILTER")
[ -n "${SANITIZE_SKIP:-}" ] && arguments+=(--skip "$SANITIZE_SKIP")
status=0
# halt_on_error=0: every race of a run is reported, not just the first.
# log_exe_name: a report's file is named after its program as well (asan.pgconn_exporter.1234), so the test
# process and the exporters it starts can be told apart.
ASAN_OPTIONS="log_path=$reports/asan log_exe_name=1" \
    LSAN_OPTIONS="suppressions=$PWD/Tests/Sanitizers/lsan.supp print_suppressions=0" \
    TSAN_OPTIONS="halt_on_error=0 log_path=$reports/tsan log_exe_name=1" \
    PGCONN_EXPORTER_BIN="$PWD/$scratch/debug/pgconn_exporter" \
    "$SWIFT" test --skip-build "${flags[@]}" --scratch-path "$scratch" --no-parallel "${arguments[@]}" \
    || status=$?
# Which reports fail the run: any AddressSanitizer error other than a leak, and any ThreadSanitizer warning. A
# leak fails it when a frame of its allocation stack is the project's code (a file under Sources/ or Tests/,
# which LeakSanitizer names with their debug info), directly or through what a leaked object holds (an indirect
# leak), and also when its stack is cut short: the fast unwinder stops at the first frame without a frame
# pointer, which Debian's C libraries (libpq, OpenSSL, glibc's resolver) have none of, so such a stack cannot
# show who called. Only a leak whose whole stack, down to the thread's start, lies in the toolchain's libraries
# (allocated by a thread of libdispatch, Foundation or XCTest) is listed and not counted.
# Tests/Sanitizers/lsan.supp names the leaks seen so far that are not the project's.
# A report file may hold only the list of suppressions used; an error starts with "ERROR:" or "WARNING:".
# blocks REPORT: one line per error or leak, "own", "cut", "library" or "error", a tab, what it is and where: the
# first frame in the project's code, or else the first three frames past the allocator.
blocks() {
    awk -v own="^$PWD/(Sources|Tests)/" '
        function flush() {
            if (head == "") return
            kind = head !~ /leak of/ ? "error" : mine != "" ? "own" : !whole ? "cut" : "library"
            print kind "\t" head ": " (mine != "" ? mine : first)
            head = ""
        }
        /^(Direct|Indirect) leak of |ERROR: AddressSanitizer|^WARNING: ThreadSanitizer/ {
            flush(); head = $0; sub(/ allocated from:$/, "", head); sub(/^==[^ ]*==/, "", head)
            mine = ""; first = ""; frames = 0; whole = 0; next
        }
        head != "" && /^ +#[0-9]+ / {
            frame = $0; sub(/^ +#[0-9]+ 0x[0-9a-f]+ (in )? */, "", frame); sub(/ \(BuildId: [0-9a-f]+\)$/, "", frame)
            split(frame, words, " ")
            allocator = words[1] ~ /^(malloc|calloc|realloc|posix_memalign|operator|swift_slowAlloc|swift_allocObject)$/
            if (!allocator && ++frames <= 3) first = (first == "" ? frame : first " <- " frame)
            if (mine == "" && words[2] ~ own) mine = frame
            if (words[1] ~ /^(start_thread|clone3?|__libc_start_main|__libc_start_call_main|_start|main)$/) whole = 1
        }
        END { flush() }' "$1"
}
mapfile -t found < <(grep -lE 'ERROR: |WARNING: ThreadSanitizer' "$reports"/* 2>/dev/null || true)
failing=() tolerated=()
for report in "${found[@]}"; do
    # A report with no block read (a sanitizer's own fatal error) fails as well.
    kinds=$(blocks "$report" | cut -f1 | sort -u || true)
    if [[ -z "$kinds" || "$kinds" =~ own|cut|error ]]; then failing+=("$report"); else tolerated+=("$report"); fi
done
for report in "${failing[@]}"; do
    echo "== $report"
    head -n 60 "$report"
done
if ((${#tolerated[@]} > 0)); then
    echo "sanitize $mode: ${#tolerated[@]} process(es) reported leaks only in the toolchain's libraries, not counted:"
    for report in "${tolerated[@]}"; do
        echo "sanitize $mode:   ${report##*/}: $(grep -m1 '^SUMMARY: ' "$report" || echo 'no summary line')"
        blocks "$report" | cut -f2 | head -n 4 | sed "s/^/sanitize $mode:     /" || true
    done
fi
if ((${#failing[@]} > 0)); then
    # The digest last, where the end of a log shows it: each report's summary and what it found, where.
    echo "sanitize $mode: ${#failing[@]} process(es) reported errors, in $reports:"
    for report in "${failing[@]}"; do
        echo "sanitize $mode: digest: ${report##*/}: $(grep -m1 '^SUMMARY: ' "$report" || echo 'no summary line')"
        blocks "$report" | grep -E '^(own|cut|error)' | cut -f2 | head -n 6 | sed "s/^/sanitize $mode: digest:   /" || true
    done
    status=1
elif ((${#found[@]} == 0)); then
    echo "sanitize $mode: no sanitizer report from any process"
fi
((status == 0)) && echo "sanitize $mode: PASSED" || echo "sanitize $mode: FAILED"
exit "$status"

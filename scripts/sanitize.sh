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

"$SWIFT" build --build-tests "${flags[@]}" --scratch-path "$scratch" 2>&1 | grep -v 'Cannot export local symbol' \
    || exit "${PIPESTATUS[0]}"
rm -rf "$reports"
mkdir -p "$reports"
arguments=()
[ -n "${TEST_FILTER:-}" ] && arguments+=(--filter "$TEST_FILTER")
[ -n "${SANITIZE_SKIP:-}" ] && arguments+=(--skip "$SANITIZE_SKIP")
status=0
# halt_on_error=0: every race of a run is reported, not just the first.
ASAN_OPTIONS="log_path=$reports/asan" \
    LSAN_OPTIONS="suppressions=$PWD/Tests/Sanitizers/lsan.supp print_suppressions=0" \
    TSAN_OPTIONS="halt_on_error=0 log_path=$reports/tsan" \
    PGCONN_EXPORTER_BIN="$PWD/$scratch/debug/pgconn_exporter" \
    "$SWIFT" test --skip-build "${flags[@]}" --scratch-path "$scratch" --no-parallel "${arguments[@]}" \
    || status=$?
# A report file may hold only the list of suppressions used; an error starts with "ERROR:" or, for TSan,
# "WARNING: ThreadSanitizer".
mapfile -t found < <(grep -lE 'ERROR: |WARNING: ThreadSanitizer' "$reports"/* 2>/dev/null || true)
if ((${#found[@]} > 0)); then
    echo "sanitize $mode: ${#found[@]} process(es) reported errors, in $reports:"
    for report in "${found[@]}"; do
        echo "== $report"
        head -n 60 "$report"
    done
    status=1
else
    echo "sanitize $mode: no sanitizer report from any process"
fi
((status == 0)) && echo "sanitize $mode: PASSED" || echo "sanitize $mode: FAILED"
exit "$status"

#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (Tests/Fuzz): builds pgconn-fuzz with --sanitize=fuzzer and
# AddressSanitizer into .build-fuzz, then runs each target for FUZZ_SECONDS from its seed corpus in
# Tests/Fuzz/<target>. New inputs go to .build-fuzz/corpus (never into the repository); a crash, a hang
# (one input over FUZZ_INPUT_TIMEOUT seconds) or memory over FUZZ_RSS_MB stops the run and is saved under
# .build-fuzz/crashes, with the line that replays it.
#
#   FUZZ_SECONDS=30 (per target)   FUZZ_TARGETS="config webconfig dsn http duration failure labels"   SWIFT=swift
set -euo pipefail
cd "$(dirname "$0")/.."

SWIFT=${SWIFT:-swift}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_TARGETS=${FUZZ_TARGETS:-config webconfig dsn http duration failure labels}
FUZZ_INPUT_TIMEOUT=${FUZZ_INPUT_TIMEOUT:-10}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
scratch=.build-fuzz

# swiftc's -sanitize=fuzzer links libFuzzer but instruments no Swift code: the coverage flags do that.
mkdir -p "$scratch"
echo "fuzz: building pgconn-fuzz (libFuzzer, AddressSanitizer) into $scratch"
if ! "$SWIFT" build --product pgconn-fuzz --sanitize=fuzzer --sanitize=address -Xswiftc -DPGCONN_FUZZ \
    -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
    --scratch-path "$scratch" >"$scratch/build.log" 2>&1; then
    grep -v 'Cannot export local symbol' "$scratch/build.log" | tail -n 40
    exit 1
fi
binary="$scratch/debug/pgconn-fuzz"
mkdir -p "$scratch/crashes"

status=0
for target in $FUZZ_TARGETS; do
    [ -d "Tests/Fuzz/$target" ] || { echo "fuzz: no seed corpus Tests/Fuzz/$target" >&2; exit 2; }
    corpus="$scratch/corpus/$target"
    mkdir -p "$corpus"
    cp -n "Tests/Fuzz/$target"/* "$corpus"/
    # The config seeds are a few kB; the longest one sets libFuzzer's -max_len unless this is larger.
    log="$scratch/$target.log"
    set +e
    # Swift's own crash backtracer would race libFuzzer's handler for the signal; libFuzzer saves the input.
    PGCONN_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no \
        LSAN_OPTIONS="suppressions=$PWD/Tests/Sanitizers/lsan.supp" \
        "$binary" -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_INPUT_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" \
        -max_len=16384 -print_final_stats=1 -artifact_prefix="$scratch/crashes/$target-" "$corpus" >"$log" 2>&1
    result=$?
    set -e
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)
    coverage=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' "$log" | tail -n 1)
    if ((result == 0)); then
        printf 'fuzz %-9s %8s inputs in %ss, coverage %s edges, corpus %s files: no failure\n' \
            "$target" "${runs:-?}" "$FUZZ_SECONDS" "${coverage:-?}" "$(ls "$corpus" | wc -l)"
    else
        status=1
        echo "fuzz $target: FAILED (exit $result); the end of $log:"
        tail -n 40 "$log"
        artifact=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
        if [ -n "$artifact" ]; then
            echo "replay: PGCONN_FUZZ_TARGET=$target $binary $artifact"
            echo "   or: swift run pgconn-fuzz $target $artifact"
            echo "keep it as a regression seed: cp $artifact Tests/Fuzz/$target/crash-<what>"
        fi
    fi
done
exit "$status"

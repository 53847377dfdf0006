#!/bin/sh
# tests/fuzz/run.sh SECONDS - build (if needed) and run every fuzz target for SECONDS each.
#
# Builds in $BUILD_DIR (default: build-fuzz at the top of the tree) with clang, ASan and UBSan,
# runs each target from a temporary copy of its seed corpus (so runs add nothing to the repo) with
# the key dictionary, and exits non-zero if any target crashed, leaked or printed a sanitizer
# report. Crash inputs are kept in $BUILD_DIR/fuzz-artifacts/ for reproduction:
#   $BUILD_DIR/tests/fuzz/<target> <artifact>
set -eu

secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
targets="fuzz_request fuzz_reply fuzz_envelope fuzz_ctl_request fuzz_ctl_reply"

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false
fi
ninja_targets=""
for t in $targets; do
    ninja_targets="$ninja_targets tests/fuzz/$t"
done
# shellcheck disable=SC2086
ninja -C "$build" $ninja_targets

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir -p "$build/fuzz-artifacts"
fail=0
for t in $targets; do
    mkdir -p "$tmp/$t"
    cp "$root/tests/fuzz/corpus/$t/"* "$tmp/$t/"
    log="$tmp/$t.log"
    echo "== $t: ${secs}s"
    if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=0 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$build/tests/fuzz/$t" -max_total_time="$secs" -detect_leaks=1 -timeout=10 \
        -dict="$root/tests/fuzz/hsb.dict" -artifact_prefix="$build/fuzz-artifacts/$t-" \
        -print_final_stats=1 "$tmp/$t" >"$log" 2>&1; then
        status=0
    else
        status=$?
    fi
    if [ "$status" -ne 0 ] || grep -q -e "ERROR: AddressSanitizer" -e "ERROR: LeakSanitizer" \
        -e "runtime error:" -e "fuzz check failed" "$log"; then
        echo "!! $t failed (exit $status); last lines of its log:"
        tail -n 40 "$log"
        fail=1
    else
        grep -e "stat::number_of_executed_units" -e "stat::peak_rss_mb" "$log" | sed 's/^/   /'
        grep -e "cov:" "$log" | tail -n 1 | sed 's/^/   /'
    fi
done
exit "$fail"

#!/bin/sh
# benches/ci.sh - the benchmark step of CI: the short seed scenarios, the gated workloads (best of
# 3 short trials, each measured against the raw nng reference of the same trial) and the
# regression gate against benches/baseline.json. Exits non-zero on a regression or when the bench
# cannot run. Takes about 2.5 minutes on a 2-core machine (hard limit 240 s).
#
#   benches/ci.sh [BUILD_DIR]        (default: build; needs benches/hsbus-bench and daemon/hsbusd)
#
# Results: $BUILD_DIR/bench-ci/bench.json (and bench.png when gnuplot is installed).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-"$src/build"}
bench="$build/benches/hsbus-bench"
out="$build/bench-ci"
if [ ! -x "$bench" ]; then
    echo "ci.sh: $bench not built (ninja -C $build benches/hsbus-bench daemon/hsbusd)" >&2
    exit 2
fi
mkdir -p "$out"
plot=""
if command -v gnuplot >/dev/null 2>&1; then
    plot="--plot $out/bench.png"
fi
# shellcheck disable=SC2086 # $plot is empty or two words
exec timeout --signal=INT --kill-after=20 240 "$bench" --short --duration 2 --trials 3 \
    --workloads gate,scenarios --json "$out/bench.json" $plot \
    --compare "$src/benches/baseline.json"

# tests/integration/ops/lib.sh - shared by the operations tests (sourced, not run).
#
# Each test starts a real hsbusd in its own temporary run and data directories, with metrics on a
# port the kernel picks (metrics.port=0; the daemon logs the URL it bound), and kills it on exit.
# Assertions use `hsbusctl --json` parsed by python3's json module; nothing asserts a timing: every
# wait is a bounded poll for a condition.
#
# Environment (set by meson): HSBUSD, HSBUSCTL, OPS_CLIENT, HSB_SRCDIR; OPS_WRAPPER, when set,
# prefixes the daemon's command line (the valgrind suite: any memory error or leak makes the
# daemon exit 99, which stop_daemon and the drain check report).
set -u
: "${HSBUSD:?}" "${HSBUSCTL:?}" "${OPS_CLIENT:?}" "${HSB_SRCDIR:?}"

T=$(mktemp -d /tmp/hsbus-ops.XXXXXX)
chmod 755 "$T"
RUN=$T/run
DATA=$T/var
LOG=$T/hsbusd.log
AGENTS_URL=ipc://$RUN/agents.sock
METRICS=
DPID=
BGPIDS=

fail() {
    echo "FAIL: $*" >&2
    if [ -f "$LOG" ]; then
        echo "--- last lines of the daemon's log" >&2
        tail -n 30 "$LOG" >&2
    fi
    exit 1
}

ok() {
    echo "ok - $*"
}

ops_cleanup() {
    for p in $BGPIDS; do
        kill "$p" 2>/dev/null
    done
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        kill -TERM "$DPID" 2>/dev/null
        for _ in $(seq 100); do
            kill -0 "$DPID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DPID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap ops_cleanup EXIT

# start_daemon [hsbusd options...]: start hsbusd and wait until it logged event=started.
start_daemon() {
    # shellcheck disable=SC2086 # OPS_WRAPPER is a command line
    ${OPS_WRAPPER:-} "$HSBUSD" -r "$RUN" -d "$DATA" --set metrics.port=0 "$@" 2>>"$LOG" &
    DPID=$!
    for _ in $(seq 600); do
        grep -q 'event=started' "$LOG" 2>/dev/null && break
        kill -0 "$DPID" 2>/dev/null || fail "hsbusd exited during start-up"
        sleep 0.05
    done
    grep -q 'event=started' "$LOG" || fail "hsbusd did not start"
    METRICS=$(grep -o 'event=metrics_listening url=[^ ]*' "$LOG" | tail -n 1 | sed 's/.*url=//')
}

# stop_daemon: SIGTERM and wait for exit; the daemon must exit 0.
stop_daemon() {
    for p in $BGPIDS; do
        kill "$p" 2>/dev/null
    done
    BGPIDS=
    kill -TERM "$DPID"
    wait "$DPID"
    local rc=$?
    DPID=
    [ "$rc" -eq 0 ] || fail "hsbusd exited $rc after SIGTERM"
}

ctl() {
    "$HSBUSCTL" --run-dir "$RUN" "$@"
}

# jget EXPR: evaluate a python expression over the JSON document on stdin (bound to d).
jget() {
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

# expect_rc WANT CMD...: run CMD, keep its combined output in $OUT, check its exit status.
expect_rc() {
    local want=$1
    shift
    OUT=$("$@" 2>&1)
    local rc=$?
    [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, expected $want; output: $OUT"
}

# expect_out PATTERN: $OUT (from expect_rc) must match the extended regex PATTERN.
expect_out() {
    printf '%s' "$OUT" | grep -Eq -- "$1" || fail "output does not match /$1/: $OUT"
}

# poll SECONDS CMD...: retry CMD every 0.1 s until it succeeds or SECONDS pass.
poll() {
    local n=$(($1 * 10))
    shift
    for _ in $(seq "$n"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# http_get PATH: GET $METRICS$PATH; sets HTTP_CODE and HTTP_BODY (python3, so curl is not needed).
http_get() {
    local out
    out=$(python3 - "$METRICS$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
sys.stdout.write("%d\n%s" % (code, body.decode()))
PY
) || fail "GET $METRICS$1 failed"
    HTTP_CODE=${out%%$'\n'*}
    HTTP_BODY=${out#*$'\n'}
}

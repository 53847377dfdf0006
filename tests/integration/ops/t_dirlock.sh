#!/bin/bash
# One daemon per run and data directory: a second hsbusd on the same directories exits 1 at once,
# says which process holds them, and leaves the first one serving; once the first has stopped
# (even by SIGKILL), a new daemon starts on the same directories.
. "$(dirname "$0")/lib.sh"

start_daemon
FIRST=$DPID
"$HSBUSD" -r "$RUN" -d "$DATA" --set metrics.port=0 2>"$T/second.log"
rc=$?
[ "$rc" -eq 1 ] || fail "a second daemon on the same directories exited $rc, want 1"
grep -q "event=dir_locked .*in use by another hsbusd (pid $FIRST" "$T/second.log" ||
    fail "the refusal does not name the holder: $(cat "$T/second.log")"
ok "a second daemon on the same run directory is refused and names pid $FIRST"
ctl status >/dev/null || fail "the first daemon stopped answering"
ok "the first daemon still serves"

# Another run directory but the same data directory: refused too (one database, one owner).
"$HSBUSD" -r "$T/run2" -d "$DATA" --set metrics.port=0 2>"$T/third.log"
rc=$?
[ "$rc" -eq 1 ] || fail "a daemon on the same data directory exited $rc, want 1"
grep -q "event=dir_locked" "$T/third.log" || fail "no dir_locked: $(cat "$T/third.log")"
[ ! -e "$T/run2/agents.sock" ] || fail "the refused daemon opened its socket"
ok "a second daemon on the same data directory is refused before it opens anything"

kill -KILL "$FIRST"
wait "$FIRST" 2>/dev/null
DPID=
: >"$LOG"
start_daemon
ok "after SIGKILL of the holder a new daemon starts on the same directories"
stop_daemon

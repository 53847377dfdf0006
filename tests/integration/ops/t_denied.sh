#!/bin/bash
# A peer without permission is refused: first by the socket file's mode (0600, in a 0750 run
# directory), and, when an operator loosens the file mode by hand, by the daemon's peer-uid check
# (E_DENIED, logged). Runs hsbusctl as "nobody" with setpriv (needs root).
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "needs root to run hsbusctl as another uid"; exit 77; }
SETPRIV=$(command -v setpriv) || { echo "setpriv not installed (util-linux)"; exit 77; }
as_nobody() {
    "$SETPRIV" --reuid=65534 --regid=65534 --clear-groups "$@"
}
# nobody must be able to run the binary: copy it out of a build tree it may not traverse.
cp "$HSBUSCTL" "$T/hsbusctl"
chmod 755 "$T/hsbusctl"
as_nobody "$T/hsbusctl" --version >/dev/null || { echo "nobody cannot run hsbusctl here"; exit 77; }

start_daemon
SOCK=$RUN/control.sock
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "control.sock mode is $(stat -c %a "$SOCK"), not 600"
ok "control.sock is mode 0600"

# 1. The file mode refuses the connection.
chmod 755 "$RUN" # let nobody reach the socket file; its own mode still refuses
expect_rc 3 as_nobody "$T/hsbusctl" --run-dir "$RUN" status
expect_out "cannot connect to ipc://$SOCK: permission denied"
ok "a connection from another uid is refused by the socket's mode (exit 3)"

# 2. With the mode loosened, the daemon's uid check answers E_DENIED.
chmod 666 "$SOCK"
expect_rc 1 as_nobody "$T/hsbusctl" --run-dir "$RUN" status
expect_out 'denied: permission denied'
expect_rc 1 as_nobody "$T/hsbusctl" --run-dir "$RUN" --json drain
expect_out '"err": "E_DENIED"'
poll 5 grep -q 'event=control_denied peer_uid=65534' "$LOG" || fail "the denial was not logged"
ctl status >/dev/null || fail "root is refused"
[ "$(ctl --json status | jget 'd["state"]')" = running ] || fail "a denied drain drained"
ok "another uid gets E_DENIED from the uid check (exit 1), logged; the daemon's own uid works"
stop_daemon

#!/bin/bash
# systemd readiness (Type=notify): with NOTIFY_SOCKET set, hsbusd sends READY=1 once its sockets
# listen and STOPPING=1 when it shuts down, as datagrams on that AF_UNIX socket; a daemon whose
# agent socket cannot listen never sends READY=1.
. "$(dirname "$0")/lib.sh"

# listen SOCK OUT: a notify socket at SOCK that logs each line it receives to OUT, until STOPPING=1.
listen() {
    python3 - "$1" >"$2" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
print("bound", flush=True)
seen = []
while "STOPPING=1" not in seen:
    msg = s.recv(4096).decode()
    for line in msg.splitlines():
        print(line, flush=True)
        seen.append(line)
PY
    BGPIDS="$BGPIDS $!"
    poll 10 grep -q bound "$2" || fail "notify listener did not start"
}

NS=$T/notify.sock
listen "$NS" "$T/notify.out"

NOTIFY_SOCKET=$NS start_daemon
poll 10 grep -qx 'READY=1' "$T/notify.out" || fail "no READY=1: $(cat "$T/notify.out")"
ctl status >/dev/null || fail "not answering after READY=1"
ok "READY=1 once the sockets listen"
kill -TERM "$DPID" # not stop_daemon: that would stop the listener first
wait "$DPID" || fail "hsbusd exited $? after SIGTERM"
DPID=
poll 10 grep -qx 'STOPPING=1' "$T/notify.out" || fail "no STOPPING=1: $(cat "$T/notify.out")"
ok "STOPPING=1 on shutdown"

# A daemon that cannot open its agent socket never says READY=1: its operator surfaces started
# first, so it shuts down through the normal path (STOPPING=1) and exits 1.
listen "$T/notify2.sock" "$T/notify2.out"
NOTIFY_SOCKET=$T/notify2.sock timeout 30 "$HSBUSD" -r "$T/run2" -d "$T/var2" --set metrics.port=0 \
    --set gateway.listen=bogus://nowhere 2>"$T/bad_listen.log"
rc=$?
[ $rc -eq 1 ] || fail "a daemon that cannot listen exited $rc: $(cat "$T/bad_listen.log")"
grep -q 'event=listen_failed url=bogus://nowhere' "$T/bad_listen.log" ||
    fail "no listen_failed line: $(cat "$T/bad_listen.log")"
poll 10 grep -qx 'STOPPING=1' "$T/notify2.out" || fail "no STOPPING=1: $(cat "$T/notify2.out")"
! grep -qx 'READY=1' "$T/notify2.out" || fail "READY=1 without an agent socket: $(cat "$T/notify2.out")"
ok "no READY=1 when the agent socket cannot listen; exit 1 with event=listen_failed"
